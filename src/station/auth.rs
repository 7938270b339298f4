//! Sessions, CSRF tokens and the login rate limit.
//!
//! A login gives a random session id in a cookie (HttpOnly, SameSite=Strict, Secure over TLS) and a
//! random CSRF token the page sends back in the `X-CSRF-Token` header of every write; a write without a
//! session, or whose token does not match the session's, is refused. Sessions live in memory: a
//! restart of the agent logs everybody out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::users::{Role, Users, verify_password};

/// Sessions kept at most (the oldest idle one goes first).
const MAX_SESSIONS: usize = 1000;
/// Client addresses the rate limiter remembers at most.
const MAX_TRACKED: usize = 10_000;
const LIMIT_WINDOW: Duration = Duration::from_secs(60);
pub const COOKIE: &str = "lineside_session";

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    last_seen: Instant,
}

pub struct Auth {
    users_file: PathBuf,
    users: Mutex<(Option<std::time::SystemTime>, Users)>,
    sessions: Mutex<HashMap<String, Session>>,
    idle: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    max_failures: u32,
    /// Verified against when the user does not exist, so an unknown name takes as long as a wrong
    /// password.
    dummy_hash: String,
}

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    // SystemRandom only fails when the OS has no randomness at all; the token is then still unique
    // per process run by the clock, and logins would be the least of the gateway's problems.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes();
        b[..16].copy_from_slice(&t);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a login did not succeed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Too many failures from this address lately.
    Limited,
    Invalid,
}

impl Auth {
    pub fn new(users_file: PathBuf, idle: Duration, max_failures: u32) -> Auth {
        Auth {
            users_file,
            users: Mutex::new((None, Users::default())),
            sessions: Mutex::new(HashMap::new()),
            idle,
            failures: Mutex::new(HashMap::new()),
            max_failures: max_failures.max(1),
            dummy_hash: super::users::hash_password("not a password of anybody")
                .unwrap_or_default(),
        }
    }

    /// The users file as it is now (re-read when it changed, so `lineside user add` takes effect
    /// without a restart).
    fn user(&self, name: &str) -> Option<(Role, String)> {
        let mut cached = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let modified = std::fs::metadata(&self.users_file)
            .and_then(|m| m.modified())
            .ok();
        if modified != cached.0 || modified.is_none() {
            match Users::load(&self.users_file) {
                Ok(u) => *cached = (modified, u),
                Err(e) => tracing::warn!(error = %e, "station users file"),
            }
        }
        cached.1.find(name).map(|u| (u.role, u.hash.clone()))
    }

    fn limited(&self, ip: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        matches!(f.get(&ip), Some((since, n)) if since.elapsed() < LIMIT_WINDOW && *n >= self.max_failures)
    }

    fn failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() >= MAX_TRACKED {
            f.retain(|_, (since, _)| since.elapsed() < LIMIT_WINDOW);
        }
        if f.len() >= MAX_TRACKED {
            return; // under a flood from many addresses: the per-address count is lost, not memory
        }
        let e = f.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= LIMIT_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }

    /// Checks a name and password (argon2: slow on purpose, call it off the async threads). On success
    /// returns the new session's id.
    pub fn login(&self, ip: IpAddr, name: &str, password: &str) -> Result<String, LoginError> {
        if self.limited(ip) {
            return Err(LoginError::Limited);
        }
        let found = self.user(name);
        let hash = found
            .as_ref()
            .map_or(self.dummy_hash.as_str(), |(_, h)| h.as_str());
        let ok = verify_password(hash, password) && found.is_some();
        let Some((role, _)) = found.filter(|_| ok) else {
            self.failed(ip);
            return Err(LoginError::Invalid);
        };
        let id = random_token();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, v| v.last_seen.elapsed() < self.idle);
        if s.len() >= MAX_SESSIONS
            && let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.last_seen)
                .map(|(k, _)| k.clone())
        {
            s.remove(&oldest);
        }
        s.insert(
            id.clone(),
            Session {
                user: name.to_string(),
                role,
                csrf: random_token(),
                last_seen: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The live session of a cookie value (its idle time restarts).
    pub fn session(&self, id: &str) -> Option<Session> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let live = s.get(id).is_some_and(|v| v.last_seen.elapsed() < self.idle);
        if !live {
            s.remove(id);
            return None;
        }
        let v = s.get_mut(id)?;
        v.last_seen = Instant::now();
        Some(v.clone())
    }

    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::station::users::Users;

    #[test]
    fn login_sessions_and_the_rate_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::default();
        users.set("op", Role::Operator, "password1").unwrap();
        users.save(&path).unwrap();
        let auth = Auth::new(path, Duration::from_secs(60), 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let id = auth.login(ip, "op", "password1").unwrap();
        let s = auth.session(&id).unwrap();
        assert_eq!((s.user.as_str(), s.role), ("op", Role::Operator));
        assert_eq!(s.csrf.len(), 64);
        assert!(auth.session("nope").is_none());
        assert_eq!(auth.login(ip, "op", "wrong"), Err(LoginError::Invalid));
        assert_eq!(
            auth.login(ip, "ghost", "password1"),
            Err(LoginError::Invalid)
        );
        assert_eq!(auth.login(ip, "op", "wrong"), Err(LoginError::Invalid));
        assert_eq!(
            auth.login(ip, "op", "password1"),
            Err(LoginError::Limited),
            "three failures in a minute block even the right password"
        );
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(auth.login(other, "op", "password1").is_ok());
        auth.logout(&id);
        assert!(auth.session(&id).is_none());
        assert!(same_token("abc", "abc") && !same_token("abc", "abd"));
    }
}
