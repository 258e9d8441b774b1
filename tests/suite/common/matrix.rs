//! Every server function with sample arguments and the status each caller gets (anonymous,
//! security reviewer, incident responder, platform admin): the authorization matrix's rows, and
//! the field names the hostile-input suite garbles.

/// A WebAuthn assertion that parses but answers no challenge: the refusal is then about who
/// asks, not about malformed input (which is a 400 before anything else).
pub const FOREIGN_ASSERTION: &str = r#"{"id":"AAAA","rawId":"AAAA","response":{"authenticatorData":"AAAA","clientDataJSON":"AAAA","signature":"AAAA","userHandle":null},"extensions":{},"type":"public-key"}"#;

/// Expected status per caller: (anonymous, reviewer, responder, platform admin).
pub type Row = (&'static str, &'static [(&'static str, &'static str)], [u16; 4]);

/// Every server function, in call order (begin before finish; logout last). Statuses other
/// than 401/403 are the domain's answer to the sample arguments (e.g. 404 for an unknown id).
pub const SERVER_FNS: [Row; 63] = [
    ("readiness", &[], [200, 200, 200, 200]),
    ("current_admin", &[], [200, 200, 200, 200]),
    ("list_tenants", &[("state", "drifted"), ("due_days", "7"), ("search", ""), ("cursor", "")], [401, 200, 200, 200]),
    ("fleet_counts", &[], [401, 200, 200, 200]),
    ("overview", &[], [401, 200, 200, 200]),
    ("credential_metadata", &[("tenant_id", "acme")], [401, 200, 200, 200]),
    (
        "begin_reveal",
        &[("tenant_id", "acme"), ("reason", "matrix check"), ("category", "support")],
        [401, 403, 403, 200],
    ),
    ("finish_reveal", &[("tenant_id", "acme"), ("credential", FOREIGN_ASSERTION)], [401, 403, 403, 401]),
    ("reveal_credential", &[("tenant_id", "acme")], [401, 403, 403, 403]),
    ("list_grants", &[], [401, 200, 200, 200]),
    ("list_reveal_requests", &[("pending_only", "true")], [401, 200, 403, 200]),
    ("begin_decide_reveal", &[("request_id", "nope"), ("approve", "true")], [401, 403, 403, 404]),
    ("finish_decide_reveal", &[("request_id", "nope"), ("credential", FOREIGN_ASSERTION)], [401, 403, 403, 404]),
    ("list_alerts", &[], [401, 200, 200, 200]),
    ("rotation_status", &[("tenant_id", "acme")], [401, 200, 200, 200]),
    ("begin_rotation", &[("tenant_id", "acme")], [401, 403, 403, 200]),
    // acme was only stored, never rotated: nothing to revert (409, audited).
    ("begin_revert", &[("tenant_id", "acme"), ("reason", "matrix check")], [401, 403, 403, 409]),
    ("finish_revert", &[("tenant_id", "acme"), ("credential", FOREIGN_ASSERTION)], [401, 403, 403, 401]),
    ("tenant_settings", &[("tenant_id", "acme")], [401, 200, 200, 200]),
    ("list_mailu_admins", &[("tenant_id", "acme")], [401, 200, 200, 200]),
    (
        "trust_mailu_admin",
        &[("tenant_id", "acme"), ("email", "backdoor@acme.example"), ("note", "matrix check")],
        [401, 403, 403, 403],
    ),
    (
        "update_tenant_settings",
        &[
            ("tenant_id", "acme"),
            ("rotation_period_days", "60"),
            ("contact_email", "ops@acme.example"),
            ("mailu_api_url", "https://mail.acme.example/api/v1"),
            ("mailu_api_token", ""),
            ("rotate_after_reveal", "false"),
            ("reveal_approval", "false"),
            ("password_length", "32"),
            ("password_alphabet", "alphanumeric"),
            ("reveal_notice", "off"),
        ],
        [401, 403, 403, 200],
    ),
    ("defer_rotation", &[("tenant_id", "acme"), ("days", "9"), ("reason", "too long")], [401, 403, 403, 400]),
    ("finish_rotation", &[("tenant_id", "acme"), ("credential", FOREIGN_ASSERTION)], [401, 403, 403, 401]),
    ("revoke_grant", &[("grant_id", "0000")], [401, 404, 404, 404]),
    ("list_admins", &[], [401, 403, 403, 200]),
    // Account changes: refused to every role without a step-up of the session (the rows after
    // one are in STEP_UP_FNS).
    ("create_invite", &[("email", "new@example.com"), ("role", "security_reviewer")], [401, 403, 403, 403]),
    ("list_invites", &[], [401, 403, 403, 200]),
    ("revoke_invite", &[("invite_id", "nope")], [401, 403, 403, 403]),
    ("change_role", &[("admin_id", "nobody"), ("role", "security_reviewer")], [401, 403, 403, 403]),
    ("disable_admin", &[("admin_id", "nobody")], [401, 403, 403, 403]),
    ("begin_add_passkey", &[], [401, 403, 403, 403]),
    ("finish_add_passkey", &[("credential", "{}"), ("name", "x")], [401, 403, 403, 403]),
    ("rename_passkey", &[("passkey_id", "nope"), ("name", "x")], [401, 403, 403, 403]),
    ("remove_passkey", &[("passkey_id", "nope"), ("lost", "false")], [401, 403, 403, 403]),
    ("begin_confirm", &[], [401, 200, 200, 200]),
    ("finish_confirm", &[("credential", FOREIGN_ASSERTION)], [401, 401, 401, 401]),
    ("begin_enrollment", &[("token", "not-a-token"), ("display_name", "x")], [400, 400, 400, 400]),
    (
        "finish_enrollment",
        &[("token", "not-a-token"), ("credential", FOREIGN_ASSERTION), ("passkey_name", "x")],
        [400, 400, 400, 400],
    ),
    ("begin_login", &[("email", "nobody@example.com")], [401, 401, 401, 401]),
    ("finish_login", &[("credential", FOREIGN_ASSERTION)], [401, 401, 401, 401]),
    ("list_incidents", &[], [401, 200, 200, 200]),
    ("acknowledge_incident", &[("incident", "nope"), ("note", "looked at it")], [401, 404, 404, 404]),
    ("send_test_alert", &[], [401, 403, 403, 400]),
    ("retry_alert", &[("alert_id", "nope")], [401, 403, 403, 404]),
    (
        "begin_emergency_reset",
        &[("tenant_id", "acme"), ("incident_id", "INC-1"), ("reason", "matrix check")],
        [401, 403, 200, 200],
    ),
    ("finish_emergency_reset", &[("tenant_id", "acme"), ("credential", FOREIGN_ASSERTION)], [401, 403, 401, 401]),
    ("plan_sweep", &[("subject_kind", "admin"), ("subject", "plat@example.com"), ("since", "")], [401, 403, 200, 200]),
    (
        "begin_sweep",
        &[
            ("subject_kind", "admin"),
            ("subject", "plat@example.com"),
            ("since", ""),
            ("incident_id", "INC-1"),
            ("reason", "matrix check"),
        ],
        [401, 403, 200, 200],
    ),
    ("finish_sweep", &[("credential", FOREIGN_ASSERTION)], [401, 403, 401, 401]),
    ("list_backups", &[], [401, 200, 200, 200]),
    ("list_drills", &[], [401, 200, 200, 200]),
    ("restore_status", &[], [401, 200, 200, 200]),
    ("begin_restore", &[("backup_id", "2001-01-01"), ("dry_run", "true"), ("force", "false")], [401, 403, 403, 404]),
    ("finish_restore", &[("credential", FOREIGN_ASSERTION)], [401, 403, 403, 401]),
    (
        "begin_recovery",
        &[("tenant_id", "acme"), ("new_vps_ip", "127.0.0.1"), ("mailu_api_url", "https://mail.acme.example/api/v1")],
        [401, 403, 200, 200],
    ),
    (
        "finish_recovery",
        &[("tenant_id", "acme"), ("credential", FOREIGN_ASSERTION), ("mailu_api_token", "")],
        [401, 403, 401, 401],
    ),
    (
        "query_audit",
        &[
            ("tenant", ""),
            ("event", ""),
            ("actor", ""),
            ("severity", ""),
            ("text", ""),
            ("since", ""),
            ("until", ""),
            ("cursor", ""),
        ],
        [401, 200, 403, 200],
    ),
    (
        "audit_chart",
        &[("tenant", ""), ("event", ""), ("actor", ""), ("severity", ""), ("text", ""), ("since", ""), ("until", "")],
        [401, 200, 403, 200],
    ),
    ("audit_chain_state", &[], [401, 200, 403, 200]),
    ("acknowledge_alert", &[("alert_id", "nope")], [401, 404, 404, 404]),
    ("alert_rules", &[], [401, 200, 200, 200]),
    ("logout", &[], [200, 200, 200, 200]),
];

/// (name, sample form, status before the step-up, status after) for (reviewer, responder,
/// platform admin).
pub type StepUpRow = (&'static str, &'static [(&'static str, &'static str)], [u16; 3], [u16; 3]);

/// The step-up dimension: each sensitive server function with sample arguments and the status
/// for (reviewer, responder, platform admin) before the session's step-up and after it. Without
/// a step-up every role is refused; after it, the role and the domain decide.
pub const STEP_UP_FNS: [StepUpRow; 11] = [
    (
        "create_invite",
        &[("email", "stepped@example.com"), ("role", "security_reviewer")],
        [403, 403, 403],
        [403, 403, 200],
    ),
    ("revoke_invite", &[("invite_id", "nope")], [403, 403, 403], [403, 403, 404]),
    ("change_role", &[("admin_id", "nobody"), ("role", "security_reviewer")], [403, 403, 403], [403, 403, 404]),
    ("disable_admin", &[("admin_id", "nobody")], [403, 403, 403], [403, 403, 404]),
    ("begin_add_passkey", &[], [403, 403, 403], [200, 200, 200]),
    ("finish_add_passkey", &[("credential", "{}"), ("name", "x")], [403, 403, 403], [400, 400, 400]),
    ("rename_passkey", &[("passkey_id", "nope"), ("name", "x")], [403, 403, 403], [404, 404, 404]),
    ("remove_passkey", &[("passkey_id", "nope"), ("lost", "false")], [403, 403, 403], [404, 404, 404]),
    (
        "trust_mailu_admin",
        &[("tenant_id", "acme"), ("email", "backdoor@acme.example"), ("note", "matrix check")],
        [403, 403, 403],
        [403, 403, 404],
    ),
    // Same Mailu API URL: no step-up needed (the row in SERVER_FNS). globex, so that acme keeps
    // the URL the API rows below store it with.
    (
        "update_tenant_settings",
        &[
            ("tenant_id", "globex"),
            ("rotation_period_days", "60"),
            ("contact_email", "ops@acme.example"),
            ("mailu_api_url", "https://elsewhere.example/api/v1"),
            ("mailu_api_token", ""),
            ("rotate_after_reveal", "false"),
            ("reveal_approval", "false"),
            ("password_length", "32"),
            ("password_alphabet", "alphanumeric"),
            ("reveal_notice", "off"),
        ],
        // After the step-up a new URL still needs its own token: 400.
        [403, 403, 403],
        [403, 403, 400],
    ),
    (
        "update_tenant_settings",
        &[
            ("tenant_id", "globex"),
            ("rotation_period_days", "60"),
            ("contact_email", "ops@acme.example"),
            ("mailu_api_url", "https://elsewhere.example/api/v1"),
            ("mailu_api_token", "new-token"),
            ("rotate_after_reveal", "false"),
            ("reveal_approval", "false"),
            ("password_length", "32"),
            ("password_alphabet", "alphanumeric"),
            ("reveal_notice", "off"),
        ],
        [403, 403, 403],
        [403, 403, 200],
    ),
];
