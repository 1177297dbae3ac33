use std::sync::atomic::AtomicU64;

use super::*;
use crate::support::hashing::{hex, sha256};
use crate::support::redis_link::AfterWrites;

#[derive(Debug)]
struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl FakeClock {
    fn advance(&self, us: u64) {
        self.0.fetch_add(us, Ordering::SeqCst);
    }
}

fn limiter(limits: &str) -> (Arc<Limiter>, Arc<FakeClock>) {
    let text = format!(
        r#"
[[keys]]
id = "alice"
team = "research"
key_sha256 = "{a}"
[[keys]]
id = "bob"
team = "research"
key_sha256 = "{b}"
{limits}
"#,
        a = hex(&sha256(b"a")),
        b = hex(&sha256(b"b")),
    );
    let config = Config::parse(&text).unwrap();
    let clock = Arc::new(FakeClock(AtomicU64::new(1_000_000_000_000)));
    let redis = config
        .redis
        .as_ref()
        .map(|r| Arc::new(crate::support::redis_link::RedisLink::new(r).unwrap()));
    (
        Limiter::with_clock(&config, redis, clock.clone()).unwrap(),
        clock,
    )
}

fn who(key: &str) -> Principal {
    Principal {
        key_id: Arc::from(key),
        team: Arc::from("research"),
        admin: false,
    }
}

const ONE: Demand = Demand {
    input: 0,
    max_output: Some(0),
};

#[tokio::test]
async fn a_burst_admits_exactly_its_size_then_refills_at_the_rate() {
    let (l, clock) = limiter(
        "[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 10\nburst = 3\n",
    );
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..5 {
        match l
            .reserve(&who(if i % 2 == 0 { "alice" } else { "bob" }), ONE, &[])
            .await
        {
            Ok((r, _)) => held.push(r),
            Err((e, _)) => {
                assert_eq!(e.status, http::StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(e.retry_after, Some(6), "one request every 6 s");
                assert!(e.body.message.contains("requests per minute"));
                refused += 1;
            }
        }
    }
    assert_eq!(
        (held.len(), refused),
        (3, 2),
        "the team's burst is shared by its keys"
    );
    clock.advance(6_000_000);
    assert!(l.reserve(&who("alice"), ONE, &[]).await.is_ok());
    assert!(l.reserve(&who("alice"), ONE, &[]).await.is_err());
}

#[tokio::test]
async fn token_reservations_are_reconciled_with_real_usage() {
    let (l, _) =
        limiter("[[limits]]\nscope = \"key\"\nname = \"alice\"\ntokens_per_minute = 1000\n");
    let (r, headers) = l
        .reserve(
            &who("alice"),
            Demand {
                input: 100,
                max_output: Some(500),
            },
            &[],
        )
        .await
        .unwrap();
    let remaining = headers
        .0
        .iter()
        .find(|(n, _)| *n == "x-ratelimit-remaining-tokens")
        .unwrap();
    assert_eq!(remaining.1, "400");
    r.settle(Some((100, 50)), &mut AfterWrites::default());
    // 150 used of 1000: 800 more fit now.
    let (r, _) = l
        .reserve(
            &who("alice"),
            Demand {
                input: 300,
                max_output: Some(500),
            },
            &[],
        )
        .await
        .unwrap();
    drop(r); // abandoned: the whole 800 stays charged
    let refused = l
        .reserve(
            &who("alice"),
            Demand {
                input: 100,
                max_output: Some(0),
            },
            &[],
        )
        .await;
    assert!(refused.is_err());
    assert!(
        refused
            .unwrap_err()
            .0
            .body
            .message
            .contains("tokens per minute")
    );
    // Bob has no key limit and his team none: unlimited.
    assert!(
        l.reserve(
            &who("bob"),
            Demand {
                input: 10_000,
                max_output: None
            },
            &[]
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn input_only_counting_ignores_output() {
    let (l, _) = limiter(
        "[[limits]]\nscope = \"team\"\nname = \"research\"\ntokens_per_minute = 100\ntokens = \"input\"\n",
    );
    let (r, _) = l
        .reserve(
            &who("alice"),
            Demand {
                input: 90,
                max_output: Some(10_000),
            },
            &[],
        )
        .await
        .unwrap();
    r.settle(Some((90, 10_000)), &mut AfterWrites::default());
    assert!(
        l.reserve(
            &who("alice"),
            Demand {
                input: 10,
                max_output: None
            },
            &[]
        )
        .await
        .is_ok()
    );
    assert!(
        l.reserve(
            &who("alice"),
            Demand {
                input: 1,
                max_output: None
            },
            &[]
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn concurrency_slots_come_back_when_a_request_ends_however_it_ends() {
    let (l, _) = limiter("[[limits]]\nscope = \"team\"\nname = \"research\"\nconcurrent = 2\n");
    let (a, _) = l.reserve(&who("alice"), ONE, &[]).await.unwrap();
    let (b, _) = l.reserve(&who("bob"), ONE, &[]).await.unwrap();
    let (e, _) = l.reserve(&who("alice"), ONE, &[]).await.unwrap_err();
    assert!(e.body.message.contains("concurrent requests"));
    drop(a);
    let (c, _) = l.reserve(&who("alice"), ONE, &[]).await.unwrap();
    b.settle(None, &mut AfterWrites::default());
    c.settle(Some((1, 1)), &mut AfterWrites::default());
    assert!(l.reserve(&who("alice"), ONE, &[]).await.is_ok());
}

#[tokio::test]
async fn local_state_stays_bounded_as_buckets_go_idle() {
    let (l, clock) = limiter(
        "[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 1000000\n",
    );
    for i in 0..3000 {
        let p = Principal {
            key_id: Arc::from("alice"),
            team: Arc::from(format!("research-{i}").as_str()),
            admin: false,
        };
        // Other teams are unlimited: only research's bucket exists.
        let _ = l.reserve(&p, ONE, &[]).await;
        let _ = l
            .reserve(&who("alice"), ONE, &[])
            .await
            .map(|(r, _)| r.settle(None, &mut AfterWrites::default()));
        clock.advance(1_000_000);
    }
    assert!(
        l.local.tracked() <= 2,
        "idle buckets are pruned: {}",
        l.local.tracked()
    );
}

#[tokio::test]
async fn with_redis_a_replica_refuses_locally_what_it_alone_has_used_up() {
    let (l, clock) = limiter(
        "[redis]\nurl = \"redis://127.0.0.1:1\"\n[[limits]]\nscope = \"team\"\nname = \"research\"\nrequests_per_minute = 4\n",
    );
    let (buckets, _, _) = l.buckets(&who("alice"), ONE);
    // The burst of 4, plus one unit of slack for clock differences with Redis.
    for _ in 0..5 {
        assert!(l.first_rejection(&buckets).is_ok());
    }
    let refusal = l.first_rejection(&buckets).unwrap_err();
    assert_eq!(refusal.bucket, 0);
    assert_eq!(refusal.retry_after_us, 15_000_000);
    clock.advance(15_000_000);
    assert!(l.first_rejection(&buckets).is_ok());
}
