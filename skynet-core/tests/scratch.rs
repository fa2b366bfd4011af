use skynet_core::sim::{self, Fault, Setup, Step};
#[test]
fn scratch() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let setup = Setup {
        complete_sync: false,
        workers: 1,
        send_batch: 1,
        settle_ms: 0,
        latency_ms: 0,
    };
    let steps = [
        Step::Create {
            dir: 2,
            name: 4,
            len: 100,
        },
        Step::RenameFile {
            pick: 60,
            dir: 1,
            name: 1,
        },
        Step::Create {
            dir: 2,
            name: 1,
            len: 7,
        },
        Step::Create {
            dir: 0,
            name: 2,
            len: 1,
        },
        Step::Fail {
            skip: 4,
            fault: Fault::ReplyLost,
        },
        Step::Wait { ms: 150 },
        Step::DirToFile { pick: 193 },
        Step::Create {
            dir: 0,
            name: 4,
            len: 7,
        },
        Step::Wait { ms: 150 },
        Step::RenameOnto {
            pick: 192,
            onto: 165,
        },
        Step::Kill,
    ];
    sim::run_virtual(7557, &setup, &steps).unwrap();
}
