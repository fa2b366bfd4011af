use skynet_core::sim::{self, Fault, Setup, Step};
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
        latency_ms: 30,
    };
    let steps = [
        Step::Fail {
            skip: 1,
            fault: Fault::LinkDownAfter { attempts: 0 },
        },
        Step::Create {
            dir: 3,
            name: 1,
            len: 100,
        },
        Step::Fail {
            skip: 4,
            fault: Fault::Kill { done: true },
        },
        Step::Create {
            dir: 2,
            name: 1,
            len: 1,
        },
        Step::Wait { ms: 400 },
        Step::Append { pick: 217, len: 38 },
        Step::Overflow,
    ];
    sim::run_virtual(1600, &setup, &steps).unwrap();
}
