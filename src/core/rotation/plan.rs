//! What a rotation does next, decided from what it has observed: pure functions, apart from
//! the effects in [`super::steps`], so every decision is tested by a table.

use crate::core::mail::{LoginCheck, MailError};

/// The next step of a rotation after an observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next {
    /// The mail server takes the new password: make it the current one.
    Promote,
    /// The new password was refused: whether the current one still logs in decides.
    CheckCurrent,
    /// Try again later (after a backoff), with a new password when `new_password`.
    Retry {
        /// A new password (the old one was refused while the current one works).
        new_password: bool,
        /// Why the attempt failed.
        reason: String,
    },
    /// A person must look: the tenant becomes `needs_reconcile`.
    GiveUp {
        /// Why.
        reason: String,
    },
    /// Mailu's limiter answered before doing anything: drop this rotation, the tenant stays due.
    Defer,
}

/// After Mailu refused to set the password. `fresh`: the pending password was created in this
/// run, so it cannot be on the server yet.
pub(super) fn after_apply_error(error: &MailError, fresh: bool) -> Next {
    // A password created in this run never reached the server: handed to the next cycle
    // instead of retried into the same limit. One resumed from an earlier run may be on the
    // server already: it is kept and retried.
    if *error == MailError::RateLimited && fresh {
        return Next::Defer;
    }
    // A 400 is invalid input, not a password Mailu dislikes (it has no policy): another
    // password would fare no better, so a person is asked.
    if !error.is_transient() {
        return Next::GiveUp { reason: error.to_string() };
    }
    Next::Retry { new_password: false, reason: error.to_string() }
}

/// After an SMTP login with the new password.
pub(super) fn after_new_login(check: &LoginCheck) -> Next {
    match check {
        LoginCheck::Accepted => Next::Promote,
        LoginCheck::Rejected => Next::CheckCurrent,
        LoginCheck::Unknown(why) => {
            Next::Retry { new_password: false, reason: format!("SMTP login could not be checked: {why}") }
        }
    }
}

/// After the new password was refused, a login with the current one: only a refusal of the
/// new password while the current one works asks for another password; a check that said
/// nothing (a limit, the console's own budget) proves neither, so the same one is tried again.
pub(super) fn after_current_login(check: &LoginCheck) -> Next {
    match check {
        LoginCheck::Accepted => Next::Retry {
            new_password: true,
            reason: "the mail server accepted the change but still refuses the new password".into(),
        },
        LoginCheck::Rejected => Next::GiveUp { reason: "neither the current nor the pending password logs in".into() },
        LoginCheck::Unknown(why) => {
            Next::Retry { new_password: false, reason: format!("SMTP login could not be checked: {why}") }
        }
    }
}

/// Whether another attempt is left after `attempts` failed ones.
pub(super) fn attempts_left(attempts: u32, max_attempts: u32) -> bool {
    attempts < max_attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    type Expect = dyn Fn(&Next) -> bool;

    fn retry(new_password: bool) -> impl Fn(&Next) -> bool {
        move |next| matches!(next, Next::Retry { new_password: n, .. } if *n == new_password)
    }

    #[test]
    fn an_apply_error_defers_only_a_fresh_rate_limited_password_and_gives_up_only_on_invalid_input() {
        let unknown = || MailError::Unreachable("connection refused".into());
        let cases: [(MailError, bool, &Expect); 6] = [
            (MailError::RateLimited, true, &|n| *n == Next::Defer),
            // Resumed: it may be on the server already, so it is kept.
            (MailError::RateLimited, false, &retry(false)),
            (unknown(), true, &retry(false)),
            (unknown(), false, &retry(false)),
            (MailError::Rejected, true, &|n| matches!(n, Next::GiveUp { .. })),
            (MailError::Rejected, false, &|n| matches!(n, Next::GiveUp { .. })),
        ];
        for (error, fresh, expected) in cases {
            let next = after_apply_error(&error, fresh);
            assert!(expected(&next), "{error:?} fresh={fresh}: {next:?}");
        }
    }

    #[test]
    fn logins_decide_promote_retry_or_give_up() {
        let unknown = || LoginCheck::Unknown("timeout".into());
        assert_eq!(after_new_login(&LoginCheck::Accepted), Next::Promote);
        assert_eq!(after_new_login(&LoginCheck::Rejected), Next::CheckCurrent);
        assert!(retry(false)(&after_new_login(&unknown())));
        assert!(retry(true)(&after_current_login(&LoginCheck::Accepted)));
        assert!(matches!(after_current_login(&LoginCheck::Rejected), Next::GiveUp { .. }));
        // A login that says nothing is no proof the current password stopped working.
        assert!(retry(false)(&after_current_login(&unknown())));
    }

    #[test]
    fn attempts_run_out_at_the_limit() {
        assert!(attempts_left(0, 3) && attempts_left(2, 3));
        assert!(!attempts_left(3, 3) && !attempts_left(4, 3));
    }
}
