//! The queue's and ledger's rules against a real (in-memory) database.

use super::claim::PathSet;
use super::ledger::apply_ledger;
use super::*;
use crate::action::Action;
use crate::clock::now_ms;
use crate::conformance::rel as p;
use crate::merge::Entry;

/// Claims everything claimable now and returns the actions.
fn claim_actions(q: &Queue) -> Vec<Action> {
    q.claim(10, now_ms())
        .unwrap()
        .into_iter()
        .map(|c| c.action)
        .collect()
}

fn send(s: &str) -> Entry {
    Entry::new(Action::Send(p(s)), 0)
}

#[test]
fn later_moves_carry_a_path_along() {
    let q = Queue::open_in_memory().unwrap();
    let mv = |a: &str, b: &str| {
        Entry::new(
            Action::Move {
                from: p(a),
                to: p(b),
            },
            0,
        )
    };
    q.push(&[
        mv("x", "a/b"),
        send("a/b/f"),
        mv("a", "D0"),
        mv("D0/b", "e"),
    ])
    .unwrap();
    let first = q.claim(1, now_ms()).unwrap().remove(0);
    assert_eq!(first.action, mv("x", "a/b").action);
    // Behind `move x -> a/b`: `a` becomes `D0`, then `D0/b` becomes `e`.
    assert_eq!(
        q.carried_by_later_moves(first.id, &p("a/b")).unwrap(),
        p("e")
    );
    assert_eq!(
        q.carried_by_later_moves(first.id, &p("a/c")).unwrap(),
        p("D0/c")
    );
    assert_eq!(q.carried_by_later_moves(first.id, &p("z")).unwrap(), p("z"));
}

#[test]
fn burst_of_writes_keeps_one_row_per_path() {
    let q = Queue::open_in_memory().unwrap();
    let batch: Vec<Entry> = (0..100_000)
        .map(|i| send(&format!("f{}", i % 100)))
        .collect();
    assert_eq!(q.push(&batch).unwrap(), 100);
    assert_eq!(q.push(&batch).unwrap(), 100);
    assert_eq!(q.counts().unwrap().pending, 100);
}

#[test]
fn a_burst_keeps_the_sends_a_rename_in_it_carries() {
    // One watcher batch: a written, renamed to b, a written again. Collapsing the two
    // sends of `a` across the rename would rename the destination's old `a` to `b`.
    let q = Queue::open_in_memory().unwrap();
    let mv = Entry::new(
        Action::Move {
            from: p("a"),
            to: p("b"),
        },
        0,
    );
    q.push(&[send("a"), mv, send("a")]).unwrap();
    let mut got = claim_actions(&q);
    got.sort_by_key(|a| a.to_string());
    assert_eq!(got, vec![Action::Send(p("a")), Action::Send(p("b"))]);
}

#[test]
fn a_replayed_move_keeps_its_target_known_remotely() {
    // a was sent; a run renamed it to b remotely and died before acknowledging. The
    // replay found no a remotely (MovedUnverified). b, re-sent, is then renamed to c:
    // the destination's b must be deleted, not forgotten.
    let q = Queue::open_in_memory().unwrap();
    q.push(&[send("a")]).unwrap();
    let c = q.claim(10, now_ms()).unwrap();
    let sent = LedgerUpdate::Sent {
        path: p("a"),
        size: 3,
        mtime_ns: 7,
        hash: None,
        identity: None,
    };
    q.finish(&[Outcome::Done {
        id: c[0].id,
        ledger: sent,
    }])
    .unwrap();
    let mv = |from: &str, to: &str| {
        Entry::new(
            Action::Move {
                from: p(from),
                to: p(to),
            },
            0,
        )
    };
    q.push(&[mv("a", "b")]).unwrap();
    let c = q.claim(10, now_ms()).unwrap();
    q.finish(&[Outcome::Done {
        id: c[0].id,
        ledger: LedgerUpdate::MovedUnverified {
            from: p("a"),
            to: p("b"),
        },
    }])
    .unwrap();
    // Stale: no size, so no file matches it.
    assert_eq!(q.ledger().unwrap()[&p("b")].size, None);
    q.push(&[send("b")]).unwrap();
    q.push(&[mv("b", "c")]).unwrap();
    assert_eq!(
        claim_actions(&q),
        vec![Action::Delete(p("b")), Action::Send(p("c"))]
    );
}

#[test]
fn a_vanished_send_is_followed_by_a_directory_move() {
    // A killed run sent d/f without acknowledging it; the replayed send found f gone
    // (its folder renamed to e). The destination's copy then travels with the folder:
    // the ledger must follow it, so that f's later rename deletes it there.
    let q = Queue::open_in_memory().unwrap();
    let mv = |from: &str, to: &str| {
        Entry::new(
            Action::Move {
                from: p(from),
                to: p(to),
            },
            0,
        )
    };
    let finish = |ledger: LedgerUpdate| {
        let c = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger,
        }])
        .unwrap();
    };
    q.push(&[send("d/f")]).unwrap();
    finish(LedgerUpdate::Vanished(p("d/f")));
    q.push(&[mv("d", "e")]).unwrap();
    finish(LedgerUpdate::Moved {
        from: p("d"),
        to: p("e"),
    });
    q.push(&[mv("e/f", "g")]).unwrap();
    assert_eq!(
        claim_actions(&q),
        vec![Action::Delete(p("e/f")), Action::Send(p("g"))]
    );
}

#[test]
fn edit_during_send_is_not_lost() {
    let q = Queue::open_in_memory().unwrap();
    q.push(&[send("a")]).unwrap();
    let first = q.claim(10, now_ms()).unwrap();
    assert_eq!(first.len(), 1);
    // The file changes while its send is in flight: a new pending row, not merged.
    q.push(&[send("a")]).unwrap();
    assert!(
        q.claim(10, now_ms()).unwrap().is_empty(),
        "same path must wait"
    );
    q.finish(&[Outcome::Done {
        id: first[0].id,
        ledger: LedgerUpdate::Unchanged,
    }])
    .unwrap();
    let second = q.claim(10, now_ms()).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].action, Action::Send(p("a")));
}

#[test]
fn related_paths_keep_order_unrelated_run_in_parallel() {
    let q = Queue::open_in_memory().unwrap();
    q.push(&[send("d/x"), send("e/y")]).unwrap();
    q.push(&[Entry::new(Action::Delete(p("d")), 0)]).unwrap();
    q.push(&[send("f")]).unwrap();
    let got = claim_actions(&q);
    // delete(d) dropped the pending send under it; e/y and f are free.
    assert_eq!(
        got,
        vec![
            Action::Send(p("e/y")),
            Action::Delete(p("d")),
            Action::Send(p("f"))
        ]
    );

    let q = Queue::open_in_memory().unwrap();
    q.push(&[send("a/x")]).unwrap();
    let c = q.claim(1, now_ms()).unwrap();
    q.push(&[
        Entry::new(
            Action::Move {
                from: p("a"),
                to: p("b"),
            },
            0,
        ),
        send("c"),
    ])
    .unwrap();
    let got = claim_actions(&q);
    assert_eq!(
        got,
        vec![Action::Send(p("c"))],
        "the dir move waits for the send under it"
    );
    q.finish(&[Outcome::Done {
        id: c[0].id,
        ledger: LedgerUpdate::Unchanged,
    }])
    .unwrap();
    let got = claim_actions(&q);
    assert_eq!(
        got,
        vec![Action::Move {
            from: p("a"),
            to: p("b")
        }]
    );
}

#[test]
fn settle_time_is_respected() {
    let q = Queue::open_in_memory().unwrap();
    q.push(&[Entry::new(Action::Send(p("a")), 5_000)]).unwrap();
    assert!(q.claim(10, 4_999).unwrap().is_empty());
    assert_eq!(q.next_ready_after(4_999).unwrap(), Some(5_000));
    // Ready already: not a time to wake up for.
    assert_eq!(q.next_ready_after(5_000).unwrap(), None);
    assert_eq!(q.claim(10, 5_000).unwrap().len(), 1);
}

#[test]
fn crash_recovery_retries_in_flight_and_ledger_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.sqlite");
    {
        let q = Queue::open(&db).unwrap();
        q.push(&[send("a"), send("b")]).unwrap();
        let c = q.claim(10, now_ms()).unwrap();
        q.finish(&[Outcome::Done {
            id: c[0].id,
            ledger: LedgerUpdate::Sent {
                path: p("a"),
                size: 3,
                mtime_ns: 7,
                hash: None,
                identity: None,
            },
        }])
        .unwrap();
        // b stays in flight: the process "dies" here.
    }
    let q = Queue::open(&db).unwrap();
    assert_eq!(q.recover().unwrap(), vec![p("b")]);
    let c = q.claim(10, now_ms()).unwrap();
    assert_eq!(c[0].action, Action::Send(p("b")));
    q.finish(&[Outcome::Retry {
        id: c[0].id,
        error: "boom".into(),
        ready_at: 0,
        failed: true,
    }])
    .unwrap();
    let c = q.claim(10, now_ms()).unwrap();
    assert_eq!(c[0].attempts, 1);
    q.finish(&[Outcome::Park {
        ready_at: u64::MAX >> 2,
        id: c[0].id,
        error: "gave up".into(),
    }])
    .unwrap();
    assert_eq!(q.counts().unwrap().failed, 1);
    // Waiting for its next episode, a parked action holds back nothing queued after it
    // on a related path (a sync would otherwise wait for it, park after park).
    q.push(&[Entry::new(
        Action::Move {
            from: p("b"),
            to: p("b2"),
        },
        0,
    )])
    .unwrap();
    let claimed = q.claim(10, now_ms()).unwrap();
    assert_eq!(
        claimed.iter().map(|c| &c.action).collect::<Vec<_>>(),
        [&Action::Move {
            from: p("b"),
            to: p("b2"),
        }],
        "a parked send held back a later move of its path"
    );
    q.finish(&[Outcome::Done {
        id: claimed[0].id,
        ledger: LedgerUpdate::Unchanged,
    }])
    .unwrap();
    assert_eq!(q.last_error().unwrap().as_deref(), Some("gave up"));
    q.record_delivered(&[(p("d/x"), 1, 1, None)]).unwrap();
    q.finish(&[]).unwrap();
    q.write(|tx| {
        apply_ledger(
            tx,
            &LedgerUpdate::Moved {
                from: p("d"),
                to: p("e"),
            },
            0,
        )
    })
    .unwrap();
    let ledger = q.ledger().unwrap();
    assert!(ledger.contains_key(&p("e/x")) && !ledger.contains_key(&p("d/x")));
    assert_eq!(
        ledger[&p("a")],
        LedgerEntry {
            size: Some(3),
            mtime_ns: 7
        }
    );
}

#[test]
fn superseded_move_deletes_its_source_in_its_own_place_in_the_order() {
    // Found by the convergence property test: a/b/deep moved to a/r2, then a/b renamed to
    // D3, then another file moved onto a/r2. The old source must be deleted before the
    // directory move carries it to D3/deep.
    let q = Queue::open_in_memory().unwrap();
    q.record_delivered(&[(p("a/b/deep"), 1, 1, None), (p("a/b/f2"), 1, 1, None)])
        .unwrap();
    let mv = |f: &str, t: &str| {
        Entry::new(
            Action::Move {
                from: p(f),
                to: p(t),
            },
            0,
        )
    };
    q.push(&[mv("a/b/deep", "a/r2"), mv("a/b", "D3"), mv("D3/f2", "a/r2")])
        .unwrap();
    let order: Vec<String> = q
        .rows()
        .unwrap()
        .into_iter()
        .map(|r| {
            format!(
                "{} {}{}",
                r.kind.as_str(),
                r.from.map(|f| f + " -> ").unwrap_or_default(),
                r.path
            )
        })
        .collect();
    assert_eq!(
        order,
        vec!["delete a/b/deep", "move a/b -> D3", "move D3/f2 -> a/r2"]
    );
}

#[test]
fn path_set_conflicts() {
    let mut s = PathSet::default();
    s.insert(b"a/b".to_vec());
    assert!(s.conflicts(b"a/b"));
    assert!(s.conflicts(b"a"));
    assert!(s.conflicts(b"a/b/c"));
    assert!(!s.conflicts(b"a/bc"));
    assert!(!s.conflicts(b"ab"));
}

/// A database of version 9 (stale rows had size -1) opens with its stale rows marked stale
/// and nothing else changed: the migration keeps every row.
#[test]
fn stale_rows_of_an_older_database_keep_their_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queue.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &super::db::MIGRATIONS[..9] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO ledger (path, size, mtime_ns, sent_at) VALUES (x'61', -1, 0, 0);
             INSERT INTO ledger (path, size, mtime_ns, sent_at) VALUES (x'62', 5, 7, 0);
             PRAGMA user_version = 9;",
        )
        .unwrap();
    }
    let q = Queue::open(&path).unwrap();
    let ledger = q.ledger().unwrap();
    assert_eq!(ledger[&p("a")].size, None);
    assert_eq!(
        ledger[&p("b")],
        LedgerEntry {
            size: Some(5),
            mtime_ns: 7
        }
    );
    let rows = q.ledger_rows().unwrap();
    assert!(rows[0].stale && !rows[1].stale && rows[1].size == 5);
}
