//! What spend is made of: one record per finished request, the totals records add up to, and
//! the names of the spend counters (per key and team, by day, month and in total) that the
//! ledger keeps in memory and the shared store keeps in Redis alike.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::wire::raw_object::{ObjectWriter, write_str};

/// One finished request. Its names are shared with the request and the config (`Arc<str>`),
/// or static: a record is made on a lane and dropped on the ledger's writer, and each string
/// copied into it was an allocation freed on another thread, which glibc's per-thread cache
/// does not take back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique to this record (128 random bits): what makes a retried store write land once.
    /// Absent in lines written before the store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The request's id (`x-request-id`); a client may reuse one, so it is no key.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub request_id: Arc<str>,
    /// How the request ended (`completed`, `stream_failed`, `client_disconnected`, ...).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub outcome: Cow<'static, str>,
    /// Unix seconds (UTC).
    pub ts: u64,
    pub key_id: Arc<str>,
    pub team: Arc<str>,
    pub model: Arc<str>,
    /// `provider/upstream_model`.
    pub deployment: Arc<str>,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub output: u64,
    pub reasoning: u64,
    /// Picodollars.
    pub cost: u64,
    /// `cost` by part, picodollars (zero in lines written before the store).
    #[serde(default)]
    pub cost_cache_hit: u64,
    #[serde(default)]
    pub cost_cache_miss: u64,
    #[serde(default)]
    pub cost_output: u64,
    pub currency: Arc<str>,
    pub estimated: bool,
    /// How it was priced: the price's name, its era's start (RFC 3339; absent: the price's
    /// first era) and the tier (`peak`, `off_peak`, `flat`). Absent in records written before
    /// schedules.
    #[serde(default)]
    pub price: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub era: Option<String>,
    #[serde(default)]
    pub tier: Cow<'static, str>,
    /// dsgw's own figure when `cost` is the provider's (OpenRouter), picodollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_cost: Option<u64>,
    /// Set on a provider call that got no answer but may still be billed (it timed out after
    /// the prompt was sent): why (`timed_out`), and which call of its request it was. Its
    /// usage is the estimated prompt, and it is no request of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unanswered: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl Record {
    /// The record as its ledger line (without the newline), the same text serde_json writes
    /// for it: written field by field with the names as literals, where serde's derive escaped
    /// each name and went through its serializer per field (~6.7 K instructions a record, on
    /// the ledger's thread).
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let mut line = ObjectWriter::new(out);
        let text = |line: &mut ObjectWriter<'_>, key: &str, value: &str| {
            write_str(line.key(key), value);
        };
        for (key, value) in [
            ("uid", &*self.uid),
            ("request_id", &*self.request_id),
            ("outcome", &*self.outcome),
        ] {
            if !value.is_empty() {
                text(&mut line, key, value);
            }
        }
        let mut digits = itoa::Buffer::new();
        let mut number = |line: &mut ObjectWriter<'_>, key: &str, value: u64| {
            line.key(key)
                .extend_from_slice(digits.format(value).as_bytes());
        };
        number(&mut line, "ts", self.ts);
        text(&mut line, "key_id", &self.key_id);
        text(&mut line, "team", &self.team);
        text(&mut line, "model", &self.model);
        text(&mut line, "deployment", &self.deployment);
        for (key, value) in [
            ("cache_hit", self.cache_hit),
            ("cache_miss", self.cache_miss),
            ("output", self.output),
            ("reasoning", self.reasoning),
            ("cost", self.cost),
            ("cost_cache_hit", self.cost_cache_hit),
            ("cost_cache_miss", self.cost_cache_miss),
            ("cost_output", self.cost_output),
        ] {
            number(&mut line, key, value);
        }
        text(&mut line, "currency", &self.currency);
        line.field("estimated", if self.estimated { "true" } else { "false" });
        text(&mut line, "price", &self.price);
        if let Some(era) = &self.era {
            text(&mut line, "era", era);
        }
        text(&mut line, "tier", &self.tier);
        if let Some(computed) = self.computed_cost {
            number(&mut line, "computed_cost", computed);
        }
        if let Some(unanswered) = &self.unanswered {
            text(&mut line, "unanswered", unanswered);
        }
        if let Some(attempt) = self.attempt {
            number(&mut line, "attempt", u64::from(attempt));
        }
        line.finish();
    }
}

/// Sums of tokens and spend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    /// Provider calls with no answer that may be billed, and their estimated cost (included
    /// in `cost`), picodollars.
    pub unanswered: u64,
    pub unanswered_cost: u64,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub output: u64,
    pub reasoning: u64,
    /// Picodollars.
    pub cost: u64,
}

impl Totals {
    pub fn add(&mut self, r: &Record) {
        let unanswered = r.unanswered.is_some();
        self.merge(&Totals {
            requests: u64::from(!unanswered),
            unanswered: u64::from(unanswered),
            unanswered_cost: if unanswered { r.cost } else { 0 },
            cache_hit: r.cache_hit,
            cache_miss: r.cache_miss,
            output: r.output,
            reasoning: r.reasoning,
            cost: r.cost,
        });
    }

    pub fn merge(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.unanswered += other.unanswered;
        self.unanswered_cost += other.unanswered_cost;
        self.cache_hit += other.cache_hit;
        self.cache_miss += other.cache_miss;
        self.output += other.output;
        self.reasoning += other.reasoning;
        self.cost += other.cost;
    }
}

/// `dsgw:{team}:spend:<scope>:<name>:<period>`.
pub fn counter(team: &str, scope: &str, name: &str, period: &str) -> String {
    let mut out = String::new();
    write_counter(&mut out, team, scope, name, period);
    out
}

/// [`counter`], written over `out`: its parts pushed into one allocation, without format!'s
/// machinery.
fn write_counter(out: &mut String, team: &str, scope: &str, name: &str, period: &str) {
    let parts = ["dsgw:{", team, "}:spend:", scope, ":", name, ":", period];
    out.clear();
    out.reserve(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
}

/// The six counters one request adds to: its key's and its team's, for its day, its month and
/// all time.
pub fn counters_for(team: &str, key_id: &str, day: &str) -> [String; 6] {
    let mut all: [String; 6] = Default::default();
    let mut next = all.iter_mut();
    each_counter(&mut String::new(), team, key_id, day, |c| {
        if let Some(slot) = next.next() {
            c.clone_into(slot);
        }
    });
    all
}

/// Calls `f` with each of [`counters_for`]'s names, each written in turn into `scratch`: the
/// ledger adds every request to six counters that almost always exist already, and needs no
/// new name for them.
pub fn each_counter(
    scratch: &mut String,
    team: &str,
    key_id: &str,
    day: &str,
    mut f: impl FnMut(&str),
) {
    let month = &day[..7];
    for (scope, name) in [("team", team), ("key", key_id)] {
        for period in [day, month, "total"] {
            write_counter(scratch, team, scope, name, period);
            f(scratch);
        }
    }
}

/// Days since 1970-01-01 -> `YYYY-MM-DD` (proleptic Gregorian, UTC).
pub fn day_of(ts: u64) -> String {
    let days = (ts / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Written digit by digit: a budget check and each record's counters ask for it.
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}");
    }
    let digit = |n: i64| char::from(b'0' + n as u8);
    let mut day = String::with_capacity(10);
    day.extend([y / 1000, y / 100 % 10, y / 10 % 10, y % 10].map(digit));
    day.push('-');
    day.extend([m / 10, m % 10].map(digit));
    day.push('-');
    day.extend([d / 10, d % 10].map(digit));
    day
}

/// Unix seconds now (UTC).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Empty, plain, and the characters JSON escapes, with some beyond ASCII.
        prop_oneof![
            Just(String::new()),
            "[a-z/._-]{1,12}",
            "[a\"\\\n\u{1}\u{7f}é😀]{0,6}"
        ]
    }

    prop_compose! {
        fn record()(
            (uid, request_id, outcome, key_id, team, model) in
                (text(), text(), text(), text(), text(), text()),
            (deployment, currency, price, tier) in (text(), text(), text(), text()),
            counts in proptest::array::uniform9(any::<u64>()),
            estimated in any::<bool>(),
            (era, unanswered) in (proptest::option::of(text()), proptest::option::of(text())),
            computed_cost in proptest::option::of(any::<u64>()),
            attempt in proptest::option::of(any::<u32>()),
        ) -> Record {
            let [ts, cache_hit, cache_miss, output, reasoning, cost, cost_cache_hit, cost_cache_miss, cost_output] = counts;
            Record {
                uid, request_id: request_id.into(), outcome: outcome.into(), ts,
                key_id: key_id.into(), team: team.into(), model: model.into(),
                deployment: deployment.into(), cache_hit, cache_miss, output, reasoning, cost,
                cost_cache_hit, cost_cache_miss, cost_output, currency: currency.into(),
                estimated, price: price.into(), era, tier: tier.into(), computed_cost,
                unanswered, attempt,
            }
        }
    }

    proptest! {
        #[test]
        fn a_ledger_line_is_what_serde_json_writes_for_the_record(record in record()) {
            let mut line = Vec::new();
            record.write_line(&mut line);
            prop_assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }

    #[test]
    fn days_are_the_calendar_days_of_utc() {
        // Every day from 1970 to past 2500, against jiff's calendar.
        for days in 0..200_000u64 {
            let ts = days * 86_400 + 86_399;
            let utc = jiff::Timestamp::from_second(ts as i64).unwrap().to_string();
            assert_eq!(day_of(ts), utc[..10], "{ts}");
        }
    }

    #[test]
    fn a_record_is_written_and_read_as_before_its_names_were_shared() {
        let record = Record {
            uid: "u1".into(),
            outcome: "completed".into(),
            ts: 1_764_547_200,
            key_id: "alice".into(),
            team: "research".into(),
            model: "deepseek-chat".into(),
            deployment: "deepseek/deepseek-ai/DeepSeek-V3.2".into(),
            output: 3,
            cost: 42,
            currency: "USD".into(),
            price: "deepseek-v3.2".into(),
            tier: "off_peak".into(),
            ..Record::default()
        };
        let line = serde_json::to_string(&record).unwrap();
        // The line of a build whose records held `String`s: empty ids and outcomes left out,
        // every other field in its place.
        assert_eq!(
            line,
            r#"{"uid":"u1","outcome":"completed","ts":1764547200,"key_id":"alice","team":"research","model":"deepseek-chat","deployment":"deepseek/deepseek-ai/DeepSeek-V3.2","cache_hit":0,"cache_miss":0,"output":3,"reasoning":0,"cost":42,"cost_cache_hit":0,"cost_cache_miss":0,"cost_output":0,"currency":"USD","estimated":false,"price":"deepseek-v3.2","tier":"off_peak"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
        // A line from before the store, ids and outcome absent, still reads.
        let old: Record = serde_json::from_str(r#"{"ts":1,"key_id":"k","team":"t","model":"m","deployment":"p/m","cache_hit":0,"cache_miss":0,"output":0,"reasoning":0,"cost":0,"currency":"USD","estimated":true}"#).unwrap();
        assert!(old.request_id.is_empty() && old.outcome.is_empty() && old.tier.is_empty());
        assert_eq!(&*old.deployment, "p/m");
    }

    #[test]
    fn counter_names_are_the_shared_format() {
        for (team, scope, name, period) in [
            ("research", "team", "research", "2026-12-01"),
            ("ops", "key", "bob", "2026-12"),
            ("", "key", "", "total"),
        ] {
            assert_eq!(
                counter(team, scope, name, period),
                format!("dsgw:{{{team}}}:spend:{scope}:{name}:{period}")
            );
        }
        assert_eq!(
            counters_for("research", "alice", "2026-12-01")[4],
            "dsgw:{research}:spend:key:alice:2026-12"
        );
    }
}
