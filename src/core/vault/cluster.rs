//! One Vault or an HA cluster: each call goes to the active node, fails over within
//! [`FAILOVER_WINDOW`] when a node stops serving, and re-checks the node it uses while calls flow.

use super::{ACTIVE_RECHECK, FAILOVER_BACKOFF, FAILOVER_WINDOW, Node, PROBE_TIMEOUT, Vault, build_client};
use crate::core::error::Error;
use rustify::errors::ClientError as RestError;
use secrecy::ExposeSecret;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use vaultrs::error::ClientError;

/// What `sys/health` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultHealth {
    /// Active node, unsealed.
    Active,
    /// Standby node (can forward).
    Standby,
    /// Several nodes configured, some standby, none active: an election is under way, or the
    /// cluster lost its quorum (a lone survivor answers standby for ever).
    Leaderless,
    /// Sealed.
    Sealed,
    /// Not initialised.
    Uninitialized,
    /// No answer or an unexpected one.
    Unreachable,
}

impl VaultHealth {
    /// Stable name for health output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            VaultHealth::Active => "active",
            VaultHealth::Standby => "standby",
            VaultHealth::Leaderless => "leaderless",
            VaultHealth::Sealed => "sealed",
            VaultHealth::Uninitialized => "uninitialized",
            VaultHealth::Unreachable => "unreachable",
        }
    }
}

/// Whether a failed call says "this node cannot serve" (another node may) rather than "the
/// request is wrong" (every node would refuse it).
pub(super) trait NodeFailure {
    fn node_failed(&self) -> bool;
}

impl NodeFailure for ClientError {
    fn node_failed(&self) -> bool {
        match self {
            ClientError::APIError { code, .. } => *code >= 500,
            ClientError::RestClientError { source } => match source {
                RestError::ServerResponseError { code, .. } => *code >= 500,
                RestError::RequestError { .. } | RestError::ResponseError { .. } => true,
                _ => false,
            },
            _ => false,
        }
    }
}

impl NodeFailure for Error {
    fn node_failed(&self) -> bool {
        matches!(self, Error::VaultUnreachable(_) | Error::VaultSealed)
    }
}

/// What a failover round achieved.
pub(super) enum Switch {
    /// Calls now go to a node that answered active or standby.
    Moved,
    /// No node can serve yet (an election is under way, nodes are restarting): wait and retry.
    NoneUsable,
    /// Every node is sealed or uninitialised.
    AllSealed,
}

/// Reads a `sys/health` status code.
pub(super) fn health_from_status(status: Option<u16>) -> VaultHealth {
    match status {
        Some(200) => VaultHealth::Active,
        Some(429 | 472 | 473) => VaultHealth::Standby,
        Some(501) => VaultHealth::Uninitialized,
        Some(503) => VaultHealth::Sealed,
        _ => VaultHealth::Unreachable,
    }
}

/// The cluster's state from its nodes': the best any node offers, since one active node serves
/// every call. Standbys alone serve nothing the console uses: leaderless (a single configured
/// node that is a standby keeps its old meaning, it forwards).
pub(super) fn cluster_health(nodes: &[VaultHealth]) -> VaultHealth {
    if nodes.len() > 1 && !nodes.contains(&VaultHealth::Active) && nodes.contains(&VaultHealth::Standby) {
        return VaultHealth::Leaderless;
    }
    [VaultHealth::Active, VaultHealth::Standby, VaultHealth::Sealed, VaultHealth::Uninitialized]
        .into_iter()
        .find(|wanted| nodes.contains(wanted))
        .unwrap_or(VaultHealth::Unreachable)
}

/// The node to move to: the active one. `None` while there is none (an election is under way).
pub(super) fn pick_node(nodes: &[VaultHealth]) -> Option<usize> {
    nodes.iter().position(|h| *h == VaultHealth::Active)
}

impl Vault {
    /// Runs one Vault call on the node in use, failing over when that node cannot serve (see
    /// the module docs). Every call goes through here.
    pub(super) async fn on_cluster<T, E, F, Fut>(&self, call: F) -> std::result::Result<T, E>
    where
        E: NodeFailure,
        F: FnMut(Node) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        self.on_cluster_resending(call).await.0
    }

    /// [`Vault::on_cluster`], also saying whether the call was sent more than once (a write's
    /// first send may have landed before its node went away).
    pub(super) async fn on_cluster_resending<T, E, F, Fut>(&self, mut call: F) -> (std::result::Result<T, E>, bool)
    where
        E: NodeFailure,
        F: FnMut(Node) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + FAILOVER_WINDOW;
        let mut backoff = FAILOVER_BACKOFF.0;
        let mut resent = false;
        if self.settings.addrs.len() > 1 {
            self.confirm_active().await;
        }
        loop {
            let node = self.node();
            let result = call(node.clone()).await;
            let now = tokio::time::Instant::now();
            match result {
                Err(e) if self.settings.addrs.len() > 1 && e.node_failed() && now < deadline => {
                    match self.fail_over(&node).await {
                        Switch::Moved => {}
                        Switch::NoneUsable => {
                            tokio::time::sleep(backoff.min(deadline - now)).await;
                            backoff = (backoff * 2).min(FAILOVER_BACKOFF.1);
                        }
                        // Every node sealed or uninitialised: only an operator can help.
                        Switch::AllSealed => return (Err(e), resent),
                    }
                    resent = true;
                }
                other => return (other, resent),
            }
        }
    }

    /// Makes sure, at most every [`ACTIVE_RECHECK`], that the node in use is still the active
    /// one, and moves off it before sending when it is not.
    pub(super) async fn confirm_active(&self) {
        let due = self.confirmed.lock().map_or(true, |at| at.is_none_or(|at| at.elapsed() >= ACTIVE_RECHECK));
        if !due {
            return;
        }
        let node = self.node();
        if self.probe(self.node_addr(&node)).await == VaultHealth::Active {
            self.confirm();
        } else {
            // No active node yet: the call goes out anyway and its failure drives the failover.
            let _ = self.fail_over(&node).await;
        }
    }

    /// Notes that the node in use just answered health as active.
    pub(super) fn confirm(&self) {
        if let Ok(mut at) = self.confirmed.lock() {
            *at = Some(tokio::time::Instant::now());
        }
    }

    /// Moves calls off `failed` to a node that can serve, unless another call already did.
    pub(super) async fn fail_over(&self, failed: &Node) -> Switch {
        let _switching = self.switching.lock().await;
        if self.node().generation != failed.generation {
            return Switch::Moved;
        }
        let nodes = self.node_health().await;
        let Some(index) = pick_node(&nodes) else {
            if nodes.iter().all(|h| matches!(h, VaultHealth::Sealed | VaultHealth::Uninitialized)) {
                return Switch::AllSealed;
            }
            tracing::debug!(nodes = ?nodes, "no vault node can serve yet");
            return Switch::NoneUsable;
        };
        let addr = &self.settings.addrs[index];
        let Ok(client) = build_client(addr, self.token().expose_secret(), self.settings.timeout) else {
            return Switch::NoneUsable;
        };
        // The same node again (a passing 5xx): resend there, after a pause.
        let moved = index != failed.index;
        if let Ok(mut n) = self.node.write() {
            *n = Node { index, generation: failed.generation + 1, client: Arc::new(client) };
        }
        self.confirm();
        if moved {
            self.failovers.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("smtp_vault_vault_failovers_total").increment(1);
            tracing::warn!(from = %self.node_addr(failed), to = %addr, health = nodes[index].as_str(), "vault node cannot serve; failed over");
            Switch::Moved
        } else {
            Switch::NoneUsable
        }
    }

    /// Each configured node's `sys/health`, in `VAULT_ADDR` order.
    pub async fn node_health(&self) -> Vec<VaultHealth> {
        futures_util::future::join_all(self.settings.addrs.iter().map(|addr| self.probe(addr))).await
    }

    pub(super) async fn probe(&self, addr: &str) -> VaultHealth {
        let url = format!("{}/v1/sys/health", addr.trim_end_matches('/'));
        let status = self.http.get(url).timeout(PROBE_TIMEOUT.min(self.settings.timeout)).send().await;
        health_from_status(status.ok().map(|r| r.status().as_u16()))
    }

    /// The cluster's health from each node's `GET /v1/sys/health` status code (vaultrs' own call
    /// fails on OpenBao): active when any node is, and so on down (one usable node serves all).
    pub async fn health(&self) -> VaultHealth {
        cluster_health(&self.node_health().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::vault::vault_error;
    use VaultHealth::{Active, Leaderless, Sealed, Standby, Uninitialized, Unreachable};

    #[test]
    fn the_cluster_is_as_good_as_its_best_node_and_standbys_alone_are_leaderless() {
        assert_eq!(cluster_health(&[Unreachable, Standby, Active]), Active);
        assert_eq!(cluster_health(&[Unreachable, Standby, Standby]), Leaderless);
        assert_eq!(cluster_health(&[Sealed, Unreachable, Uninitialized]), Sealed);
        assert_eq!(cluster_health(&[Unreachable, Unreachable]), Unreachable);
        // One configured node keeps the single-node meanings.
        assert_eq!(cluster_health(&[Standby]), Standby);
        assert_eq!(cluster_health(&[Sealed]), Sealed);
    }

    #[test]
    fn only_the_active_node_is_a_failover_target() {
        assert_eq!(pick_node(&[Unreachable, Standby, Active]), Some(2));
        assert_eq!(pick_node(&[Unreachable, Standby, Standby]), None);
        assert_eq!(pick_node(&[Sealed, Sealed]), None);
    }

    #[test]
    fn node_failures_are_outages_not_refusals() {
        let api = |code| ClientError::APIError { code, errors: vec![] };
        assert!(api(503).node_failed() && api(500).node_failed() && api(502).node_failed());
        assert!(!api(400).node_failed() && !api(403).node_failed() && !api(404).node_failed());
        let response =
            |code| ClientError::RestClientError { source: RestError::ServerResponseError { code, content: None } };
        assert!(response(500).node_failed());
        assert!(!response(404).node_failed());
        assert!(Error::VaultSealed.node_failed() && Error::VaultUnreachable("x".into()).node_failed());
        assert!(!Error::Vault("permission denied".into()).node_failed() && !Error::Conflict.node_failed());
        // The outage variants are what a batch waits out; a refusal is not.
        assert!(vault_error("t", api(500)).is_vault_outage());
        assert!(vault_error("t", api(503)).is_vault_outage());
        assert!(!vault_error("t", api(403)).is_vault_outage());
        assert!(!vault_error("t", api(400)).is_vault_outage());
    }
}
