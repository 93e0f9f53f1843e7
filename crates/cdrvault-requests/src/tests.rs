use super::*;

fn settings(dual: bool) -> LookupSettings {
    LookupSettings {
        dual_control: dual,
        country_code: "KR".into(),
        output_dir: "out".into(),
        threads: 1,
    }
}

fn policy() -> RetentionPolicy {
    cdrvault_config::load(cdrvault_config::Source::Embedded)
        .unwrap()
        .retention
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Entries as the access log returns them (hash and MAC are not looked at
/// by the fold).
struct Log(Vec<cdrvault_audit::Entry>);

impl Log {
    fn push(&mut self, at: &str, kind: &str, actor: &str, subject: &str, data: Value) {
        // Through serde, as the log reads its lines: fields added to
        // `Entry` later (optional ones) need no change here.
        let e = serde_json::json!({
            "seq": self.0.len(), "at": t(at), "prev": "", "kind": kind, "actor": actor,
            "subject": subject, "data": data, "hash": "", "mac": null,
        });
        self.0.push(serde_json::from_value(e).unwrap());
    }
    fn views(&self) -> &[cdrvault_audit::Entry] {
        &self.0
    }
}

fn spec(authority: &str, targets: usize) -> Value {
    serde_json::to_value(RequestSpec {
        authority: authority.into(),
        warrant: "2026-영-123".into(),
        legal_basis: "통신비밀보호법 제13조".into(),
        targets: (0..targets)
            .map(|_| SealedTarget {
                kind: "msisdn".into(),
                sealed: "xx".into(),
            })
            .collect(),
        from: t("2026-01-01T00:00:00Z"),
        to: t("2026-02-01T00:00:00Z"),
        categories: vec!["가".into()],
    })
    .unwrap()
}

#[test]
fn lifecycle_and_dual_control() {
    let s = settings(true);
    let mut log = Log(Vec::new());
    log.push(
        "2026-03-01T00:00:00Z",
        CREATED,
        "kim",
        "KR-SPO-1",
        spec("SPO", 2),
    );
    let st = fold(log.views());
    assert_eq!(st["KR-SPO-1"].status, Status::Pending);
    // not approved yet
    assert_eq!(
        check_execute(&st, "KR-SPO-1").unwrap_err().code,
        RefusalCode::NotApproved
    );
    // the creator cannot approve under dual control
    assert_eq!(
        check_approve(&s, &st, "kim", "KR-SPO-1").unwrap_err().code,
        RefusalCode::SelfApproval
    );
    log.push(
        "2026-03-01T00:00:01Z",
        CREATED,
        "park",
        "KR-SPO-2",
        spec("SPO", 1),
    );
    let st = fold(log.views());
    assert_eq!(
        check_approve(&s, &st, "park", "KR-SPO-2").unwrap_err().code,
        RefusalCode::SelfApproval
    );
    assert!(check_approve(&settings(false), &st, "park", "KR-SPO-2").is_ok());
    assert_eq!(
        check_approve(&s, &st, "lee", "KR-SPO-404")
            .unwrap_err()
            .code,
        RefusalCode::UnknownRequest
    );
    assert!(check_approve(&s, &st, "lee", "KR-SPO-1").is_ok());
    log.push(
        "2026-03-02T00:00:00Z",
        APPROVED,
        "lee",
        "KR-SPO-1",
        json!({}),
    );
    let st = fold(log.views());
    assert_eq!(st["KR-SPO-1"].status, Status::Approved);
    assert_eq!(st["KR-SPO-1"].approved_by.as_deref(), Some("lee"));
    assert!(check_execute(&st, "KR-SPO-1").is_ok());
    log.push(
        "2026-03-02T00:00:01Z",
        EXECUTING,
        "kim",
        "KR-SPO-1",
        json!({}),
    );
    let st = fold(log.views());
    assert_eq!(
        check_execute(&st, "KR-SPO-1").unwrap_err().code,
        RefusalCode::InProgress
    );
    log.push("2026-03-02T00:00:02Z", FAILED, "kim", "KR-SPO-1", json!({}));
    assert_eq!(fold(log.views())["KR-SPO-1"].status, Status::Approved);
    log.push(
        "2026-03-02T00:00:03Z",
        EXECUTING,
        "kim",
        "KR-SPO-1",
        json!({}),
    );
    log.push(
        "2026-03-02T00:00:04Z",
        EXECUTED,
        "kim",
        "KR-SPO-1",
        json!({"rows": 7}),
    );
    let st = fold(log.views());
    assert_eq!(st["KR-SPO-1"].status, Status::Executed);
    assert_eq!(st["KR-SPO-1"].rows_provided, Some(7));
    assert_eq!(
        check_execute(&st, "KR-SPO-1").unwrap_err().code,
        RefusalCode::AlreadyExecuted
    );
    assert_eq!(
        check_cancel(&st, "KR-SPO-1").unwrap_err().code,
        RefusalCode::NotPending
    );
    assert!(check_cancel(&st, "KR-SPO-2").is_ok());
    log.push(
        "2026-03-03T00:00:00Z",
        CANCELLED,
        "lee",
        "KR-SPO-2",
        json!({}),
    );
    let st = fold(log.views());
    assert_eq!(
        check_execute(&st, "KR-SPO-2").unwrap_err().code,
        RefusalCode::Cancelled
    );
    assert_eq!(
        check_cancel(&st, "KR-SPO-2").unwrap_err().code,
        RefusalCode::NotPending
    );
}

#[test]
fn create_checks() {
    let s = settings(true);
    let p = policy();
    let st = BTreeMap::new();
    let now = t("2026-06-15T00:00:00Z");
    let ok = CreateCheck {
        id: "KR-SPO-2026-0001",
        authority: "Seoul Central District Prosecutors' Office",
        warrant: "2026-영-1",
        from: t("2026-05-01T00:00:00Z"),
        to: t("2026-06-01T00:00:00Z"),
        now,
    };
    assert!(check_create(&s, &p, &st, &ok).is_ok());
    let code = |c: CreateCheck<'_>| check_create(&s, &p, &st, &c).unwrap_err().code;
    assert_eq!(
        code(CreateCheck { warrant: " ", ..ok }),
        RefusalCode::MissingWarrant
    );
    assert_eq!(
        code(CreateCheck {
            id: "US-SPO-1",
            ..ok
        }),
        RefusalCode::BadRequestId
    );
    assert_eq!(
        code(CreateCheck {
            id: "KR-spo-1",
            ..ok
        }),
        RefusalCode::BadRequestId
    );
    assert_eq!(
        code(CreateCheck {
            from: t("2026-07-01T00:00:00Z"),
            to: t("2026-08-01T00:00:00Z"),
            ..ok
        }),
        RefusalCode::WindowInFuture
    );
    assert_eq!(
        code(CreateCheck {
            from: t("2026-05-02T00:00:00Z"),
            to: t("2026-05-01T00:00:00Z"),
            ..ok
        }),
        RefusalCode::BadWindow
    );
    // billing keeps 5 years: a window 6 years ago is outside every period
    assert_eq!(
        code(CreateCheck {
            from: t("2020-01-01T00:00:00Z"),
            to: t("2020-02-01T00:00:00Z"),
            ..ok
        }),
        RefusalCode::OutsideRetention
    );
    // 2 years ago is still held for billing
    assert!(check_create(
        &s,
        &p,
        &st,
        &CreateCheck {
            from: t("2024-06-01T00:00:00Z"),
            to: t("2024-07-01T00:00:00Z"),
            ..ok
        }
    )
    .is_ok());
}

#[test]
fn categories_and_sanitizing() {
    assert_eq!(parse_categories("다, 가,a").unwrap(), ["가", "다"]);
    assert_eq!(parse_categories("all").unwrap().len(), 7);
    assert_eq!(
        parse_categories("아").unwrap_err().code,
        RefusalCode::BadCategory
    );
    assert_eq!(sanitize("kim"), "kim");
    assert_eq!(sanitize("01012345678"), "<redacted>");
    assert_eq!(sanitize("a b;c"), "abc");
}

#[test]
fn free_text_is_checked_field_by_field_and_never_quoted() {
    assert_eq!(
        check_texts(&[("authority", "Seoul Police"), ("warrant", "2026-영-0042")]),
        Ok(())
    );
    let r = check_texts(&[("authority", "ok"), ("warrant", "call 010-5550-1234")]).unwrap_err();
    assert_eq!(r.code, RefusalCode::BadText);
    assert!(r.message.starts_with("warrant: "), "{}", r.message);
    assert!(!r.message.contains("5550"), "{}", r.message);
    let r = check_texts(&[("reason", "line\nforged")]).unwrap_err();
    assert_eq!(r.code, RefusalCode::BadText);
    assert_eq!(RefusalCode::BadText.as_str(), "bad_text");
}

#[test]
fn semiannual_report_counts_by_authority() {
    let mut log = Log(Vec::new());
    log.push(
        "2026-01-10T00:00:00Z",
        CREATED,
        "kim",
        "KR-SPO-1",
        spec("SPO", 2),
    );
    log.push(
        "2026-01-11T00:00:00Z",
        APPROVED,
        "lee",
        "KR-SPO-1",
        json!({}),
    );
    log.push(
        "2026-01-12T00:00:00Z",
        EXECUTED,
        "kim",
        "KR-SPO-1",
        json!({"rows": 10}),
    );
    log.push(
        "2026-02-10T00:00:00Z",
        CREATED,
        "kim",
        "KR-KNPA-1",
        spec("KNPA", 1),
    );
    log.push(
        "2026-02-11T00:00:00Z",
        REFUSED,
        "kim",
        "-",
        json!({"code": "missing_warrant", "authority": "KNPA"}),
    );
    log.push(
        "2026-02-12T00:00:00Z",
        REFUSED,
        "kim",
        "KR-KNPA-1",
        json!({"code": "not_approved"}),
    );
    // 2026-06-30T16:00Z is 2026-07-01 01:00 KST: second half
    log.push(
        "2026-06-30T16:00:00Z",
        EXECUTED,
        "kim",
        "KR-KNPA-1",
        json!({"rows": 3}),
    );
    let views = log.views();
    let r = HalfReport::build("2026-H1", views).unwrap();
    assert_eq!(r.total.requests_received, 2);
    assert_eq!(r.total.requests_executed, 1);
    assert_eq!(r.total.targets, 2);
    assert_eq!(r.total.records_provided, 10);
    assert_eq!(r.total.refusals, 2);
    let knpa = r
        .by_authority
        .iter()
        .find(|l| l.authority == "KNPA")
        .unwrap();
    assert_eq!(
        (knpa.requests_received, knpa.refusals, knpa.records_provided),
        (1, 2, 0)
    );
    assert_eq!(r.refusals_by_reason["missing_warrant"], 1);
    let h2 = HalfReport::build("2026-H2", views).unwrap();
    assert_eq!(h2.total.records_provided, 3);
    assert_eq!(h2.total.requests_received, 0);
    assert!(HalfReport::build("2026-H3", views).is_none());
}
