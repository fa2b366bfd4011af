use skynet_core::sim::{self, Setup, Step};
#[test]
fn scratch() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let setup = Setup {
        complete_sync: true,
        workers: 1,
        send_batch: 1,
        settle_ms: 0,
        latency_ms: 0,
    };
    let steps = [
        Step::Create {
            dir: 1,
            name: 4,
            len: 3000,
        },
        Step::Create {
            dir: 1,
            name: 2,
            len: 100,
        },
        Step::Wait { ms: 400 },
        Step::RenameFile {
            pick: 250,
            dir: 2,
            name: 3,
        },
        Step::FileToDir { pick: 237 },
        Step::DeleteTree { pick: 10 },
        Step::RenameDir { pick: 96, name: 1 },
        Step::Wait { ms: 1 },
        Step::Kill,
        Step::MoveOut {
            pick: 22,
            dir: false,
        },
    ];
    sim::run_virtual(7397, &setup, &steps).unwrap();
}
