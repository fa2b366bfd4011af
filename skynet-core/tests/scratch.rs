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
            dir: 3,
            name: 3,
            len: 3000,
        },
        Step::FileToDir { pick: 121 },
        Step::FileToDir { pick: 177 },
        Step::Create {
            dir: 2,
            name: 2,
            len: 7,
        },
        Step::Create {
            dir: 1,
            name: 1,
            len: 3000,
        },
        Step::Wait { ms: 150 },
        Step::RenameDir { pick: 50, name: 1 },
        Step::RenameOnto { pick: 68, onto: 30 },
        Step::DirToFile { pick: 225 },
    ];
    sim::run_virtual(6655, &setup, &steps).unwrap();
}
