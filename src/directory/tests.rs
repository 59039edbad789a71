//! Tests of loading and validation, including the shipped `config/network.toml`.

use std::time::Duration;

use super::*;

const SAMPLE: &str = include_str!("../../config/network.toml");

/// A small valid network; tests append or substitute to make it invalid.
pub(super) const MINI: &str = r#"
[[party]]
code = "TH"
name = "Thailand"
timezone = "Asia/Bangkok"
languages = ["th", "en"]

[[party]]
code = "CN"
name = "China"
timezone = "Asia/Shanghai"
languages = ["zh", "en"]

[[field]]
id = "drug-trafficking"
name = "Drugs"

[[field]]
id = "cyber-crime"
name = "Cyber"

[[focal_point]]
id = "th-drugs"
name = "TH drugs"
party = "TH"
roles = ["focal"]
fields = ["drug-trafficking"]
level = 1
phone = "+6625550101"
email = "th-drugs@th.example.org"
channels = ["dashboard", "sms", "email"]

[[focal_point]]
id = "th-chief"
name = "TH chief"
party = "TH"
roles = ["focal"]
fields = ["*"]
level = 2
language = "en"
channels = ["dashboard"]

[[focal_point]]
id = "cn-coord"
name = "CN coordinator"
party = "CN"
roles = ["focal", "coordinator"]
fields = ["*"]
level = 2
channels = ["dashboard"]

[[policy]]
party = "*"
field = "*"
repeat = 1
scale = { extreme = 0.25 }
steps = [
  { notify = "level:1", wait = "5m", channels = ["dashboard", "sms"] },
  { notify = "coordinators", wait = "1h30m", channels = ["email"] },
]
"#;

pub(super) fn problems(src: &str) -> Vec<Problem> {
    match Directory::parse(src) {
        Ok(_) => panic!("expected problems"),
        Err(p) => p,
    }
}

pub(super) fn has(ps: &[Problem], line: usize, needle: &str) -> bool {
    ps.iter().any(|p| p.line == line && p.message.contains(needle))
}

fn line_of(src: &str, needle: &str) -> usize {
    src.lines().position(|l| l.contains(needle)).map(|i| i + 1).expect("needle in src")
}

#[test]
fn sample_network_is_valid() {
    let d = match Directory::parse(SAMPLE) {
        Ok(d) => d,
        Err(ps) => panic!("{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n")),
    };
    assert_eq!(d.parties().len(), 12);
    assert_eq!(d.fields().len(), 12);
    let coords: Vec<_> = d.coordinators().map(|f| f.id.as_str()).collect();
    assert_eq!(coords, ["cn-coord", "asean-coord"]);
    assert!(d.focal_point("asean-admin").is_some_and(|f| f.has_role(Role::Admin)));
    assert!(d.focal_point("asean-audit").is_some_and(|f| f.has_role(Role::Auditor)));
    assert!(d.focal_point("asean-bot").is_some_and(|f| f.webhook_url.is_some()));
    // Every party: a duty officer, a level-2 "*" contact, and every field covered at level 1.
    for p in d.parties() {
        let c = p.code.to_lowercase();
        assert!(d.focal_point(&format!("{c}-duty")).is_some_and(|f| f.has_role(Role::Officer)), "{c}");
        for f in d.fields() {
            assert!(!d.focal_points_at_level(&p.code, &f.id, 1).is_empty(), "{} {} level 1", p.code, f.id);
            assert!(!d.focal_points_at_level(&p.code, &f.id, 2).is_empty(), "{} {} level 2", p.code, f.id);
        }
    }
    assert_eq!(d.focal_point_by_phone("+6625550101").map(|f| f.id.as_str()), Some("th-duty"));
    assert_eq!(d.focal_point("th-drugs").map(|f| f.language.as_str()), Some("th"));
    let all = d.policy_for("KH", "general").expect("catch-all");
    assert!(all.party.is_none() && all.field.is_none());
    assert_eq!(all.wait(0, "extreme"), Duration::from_secs(75));
    let th = d.policy_for("TH", "drug-trafficking").expect("TH policy");
    assert_eq!(th.steps[0].notify, Notify::FocalPoint("th-drugs".into()));
    assert_eq!(d.policy_for("VN", "terrorism").and_then(|p| p.field.as_deref()), Some("terrorism"));
    assert_eq!(d.policy_for("SG", "terrorism").and_then(|p| p.party.as_deref()), Some("SG"));
    assert!(d.summary().starts_with("network ok: 12 parties, 12 fields, "));
}

#[test]
fn mini_lookups() {
    let d = Directory::parse(MINI).expect("valid");
    assert_eq!(d.party("TH").map(|p| p.timezone), Some(chrono_tz::Asia::Bangkok));
    assert!(d.party("XX").is_none());
    assert_eq!(d.field("cyber-crime").map(|f| f.name.as_str()), Some("Cyber"));
    let fp = d.focal_point("th-drugs").expect("fp");
    assert_eq!(fp.language, "th", "defaults to the party's first language");
    assert!(fp.covers("drug-trafficking") && !fp.covers("cyber-crime"));
    assert!(d.focal_point("th-chief").is_some_and(|f| f.covers("cyber-crime")));
    assert_eq!(d.members("TH").count(), 2);
    assert_eq!(d.members("XX").count(), 0);
    let ids = |v: Vec<&FocalPoint>| v.into_iter().map(|f| f.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(d.focal_points_at_level("TH", "drug-trafficking", 1)), ["th-drugs"]);
    assert!(d.focal_points_at_level("TH", "cyber-crime", 1).is_empty());
    assert_eq!(ids(d.focal_points_at_level("TH", "cyber-crime", 2)), ["th-chief"]);
    assert_eq!(ids(d.focal_points_at_level("CN", "cyber-crime", 2)), ["cn-coord"]);
    assert!(d.focal_point_by_phone("+6625550102").is_none());
    let p = d.policy_for("TH", "drug-trafficking").expect("catch-all");
    assert_eq!(p.steps[1].wait, Duration::from_secs(5400));
    assert_eq!(p.line, line_of(MINI, "[[policy]]"));
}

#[test]
fn syntax_and_unknown_keys_are_one_problem_with_line() {
    let ps = problems("[[party]]\ncode = \"TH\"\nbogus = 1\n");
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, 3);
    assert!(ps[0].message.contains("bogus"));
    let ps = problems("\n\n[[party]\n");
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].line, 3);
    let ps = problems("[[focal_point]]\nid = \"x\"\nname = \"x\"\nparty = \"TH\"\nlevel = \"high\"\n");
    assert_eq!(ps[0].line, 5);
}

#[test]
fn every_problem_is_reported() {
    let bad = MINI
        .replace("code = \"CN\"", "code = \"cn\"")
        .replace("\"Asia/Bangkok\"", "\"Asia/Bankok\"")
        .replace("languages = [\"zh\", \"en\"]", "languages = []")
        .replace("phone = \"+6625550101\"", "phone = \"+66 12\"")
        .replace("email = \"th-drugs@th.example.org\"", "email = \"th-drugs.example.org\"")
        .replace("level = 2\nlanguage", "level = 12\nlanguage")
        .replace("roles = [\"focal\", \"coordinator\"]", "roles = [\"focal\", \"coordinator\", \"boss\"]")
        .replace("id = \"cyber-crime\"", "id = \"Cyber_Crime\"")
        .replace("wait = \"5m\"", "wait = \"5 minutes\"")
        .replace("extreme = 0.25", "extreme = 1.5")
        .replace("channels = [\"email\"]", "channels = [\"pager\"]");
    let ps = problems(&bad);
    let text = ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    let expect = [
        ("code = \"cn\"", "party `cn`: code `cn` is not two uppercase letters"),
        ("Asia/Bankok", "party `TH`: timezone `Asia/Bankok` is not an IANA"),
        ("languages = []", "languages is empty"),
        ("+66 12", "focal point `th-drugs`: phone `+66 12` is not E.164"),
        ("th-drugs.example.org", "focal point `th-drugs`: email"),
        ("level = 12", "focal point `th-chief`: level 12 is not between 1 and 9"),
        ("\"boss\"", "focal point `cn-coord`: unknown role `boss`"),
        ("Cyber_Crime", "field `Cyber_Crime`: id"),
        ("5 minutes", "policy (`*`, `*`): step 0: wait `5 minutes`"),
        ("extreme = 1.5", "scale extreme = 1.5 is not in (0, 1]"),
        ("\"pager\"", "step 1: unknown channel `pager`"),
    ];
    for (needle, msg) in expect {
        let line = line_of(&bad, needle);
        assert!(has(&ps, line, msg), "missing line {line}: {msg}\n--- got:\n{text}");
    }
    // The party `cn` is rejected, so cn-coord's party is unknown too.
    assert!(has(&ps, line_of(&bad, "party = \"CN\""), "focal point `cn-coord`: party `CN` is not a [[party]]"));
    let sorted = ps.windows(2).all(|w| w[0].line <= w[1].line);
    assert!(sorted, "problems sorted by line");
    assert!(text.contains("line "), "Display carries the line");
}

#[test]
fn duplicates() {
    let src = format!(
        "{MINI}\n{}\n{}\n{}\n{}",
        "[[party]]\ncode = \"TH\"\nname = \"again\"\ntimezone = \"UTC\"\nlanguages = [\"en\"]",
        "[[field]]\nid = \"cyber-crime\"\nname = \"again\"",
        "[[focal_point]]\nid = \"th-drugs\"\nname = \"again\"\nparty = \"TH\"\nroles = [\"officer\"]\nphone = \"+6625550101\"",
        "[[policy]]\nparty = \"*\"\nfield = \"*\"\nsteps = [{ notify = \"level:1\", wait = \"5m\", channels = [\"sms\"] }]",
    );
    let ps = problems(&src);
    assert!(
        ps.iter().any(|p| p.message.contains("party `TH`: duplicate party code (first defined on line 2)")),
        "{ps:?}"
    );
    assert!(ps.iter().any(|p| { p.message.contains("field `cyber-crime`: duplicate field id") }));
    assert!(ps.iter().any(|p| { p.message.contains("focal point `th-drugs`: duplicate focal point id") }));
    assert!(ps.iter().any(|p| {
        p.message.contains("focal point `th-drugs`: phone `+6625550101` is already the phone of focal point `th-drugs`")
    }));
    assert!(ps.iter().any(|p| p.message.contains("policy (`*`, `*`): duplicate policy")));
}

#[test]
fn focal_point_rules() {
    let extra = r#"
[[focal_point]]
id = "th-x"
name = "x"
party = "XX"
roles = []
fields = ["piracy"]
channels = ["sms", "email", "webhook", "fax"]

[[focal_point]]
id = "th-y"
name = "y"
party = "TH"
roles = ["focal"]
webhook_url = "ftp://example.org"

[[focal_point]]
id = "bot-ok"
name = "bot without webhook"
party = "TH"
roles = ["bot"]
channels = ["dashboard"]

[[focal_point]]
id = "Bad Id"
name = "x"
party = "TH"
roles = ["officer"]
"#;
    let src = format!("{MINI}{extra}");
    let ps = problems(&src);
    let text = ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n");
    for msg in [
        "focal point `th-x`: party `XX` is not a [[party]]",
        "focal point `th-x`: roles is empty",
        "focal point `th-x`: field `piracy` is not a [[field]]",
        "focal point `th-x`: channel sms needs a phone",
        "focal point `th-x`: channel email needs a email",
        "focal point `th-x`: channel webhook needs a webhook_url",
        "focal point `th-x`: unknown channel `fax`",
        "focal point `th-y`: has role focal or coordinator but covers no field",
        "focal point `th-y`: has role focal or coordinator but no channels",
        "focal point `th-y`: webhook_url `ftp://example.org` is not an http",
        "focal point `Bad Id`: id `Bad Id` may only contain",
    ] {
        assert!(text.contains(msg), "missing: {msg}\n--- got:\n{text}");
    }
    assert!(!text.contains("bot-ok"), "a bot without webhook is fine without the webhook channel");
}

#[test]
fn too_many_focal_points() {
    let mut src = MINI.to_string();
    for i in 0..=MAX_FOCAL_POINTS {
        src.push_str(&format!(
            "[[focal_point]]\nid = \"o-{i}\"\nname = \"o\"\nparty = \"TH\"\nroles = [\"officer\"]\n"
        ));
    }
    let ps = problems(&src);
    assert_eq!(ps.len(), 1, "{:?}", &ps[..ps.len().min(3)]);
    assert!(ps[0].message.contains("at most 10000"));
}

#[test]
fn long_strings_are_refused_and_not_echoed() {
    let long = "x".repeat(5000);
    let src = MINI.replace("name = \"TH drugs\"", &format!("name = \"{long}\""));
    let ps = problems(&src);
    assert!(ps[0].message.contains("longer than 200"));
    assert!(ps[0].message.len() < 200);
}

#[test]
fn load_and_check_file() {
    let dir = std::env::temp_dir().join(format!("focalpoint-dir-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let ok = dir.join("ok.toml");
    std::fs::write(&ok, SAMPLE).expect("write");
    let summary = check_file(&ok).expect("sample valid");
    assert!(summary.starts_with("network ok: 12 parties, 12 fields, 63 focal points, 5 policies"), "{summary}");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, MINI.replace("+6625550101", "+66 12")).expect("write");
    let err = check_file(&bad).expect_err("invalid");
    assert!(matches!(&err, LoadError::Invalid { problems, .. } if problems.len() == 1));
    assert!(err.to_string().starts_with("1 problem(s) in "));
    assert!(err.report().contains("bad.toml:"), "{}", err.report());

    let big = dir.join("big.toml");
    std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).expect("write");
    assert!(matches!(Directory::load(&big), Err(LoadError::TooLarge { .. })));

    let latin1 = dir.join("latin1.toml");
    std::fs::write(&latin1, b"# ok\n# caf\xe9\n").expect("write");
    assert!(matches!(Directory::load(&latin1), Err(LoadError::Invalid { problems, .. }) if problems[0].line == 2));

    assert!(matches!(Directory::load(&dir.join("missing.toml")), Err(LoadError::Io { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}
