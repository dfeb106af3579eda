//! Accounts: argon2id password hashes in the database, checked off the
//! may workers, with attempts limited per account and per peer address,
//! and the SASL PLAIN payload's decoding.
//!
//! A check is tens of milliseconds of CPU and 19 MiB of memory (argon2id
//! with the crate's defaults, the parameters OWASP recommends), by design:
//! that is what makes guessing slow. On a may worker it would freeze every
//! coroutine and socket of that worker for as long (the chapter's
//! `pitfall_hash_on_worker` listing measures it), so [`Accounts::check`]
//! hands the hash to a small pool of OS threads and answers the router with
//! [`Event::AuthChecked`] when it is done.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use may::go;
use may_patterns::blocking::BlockingPool;
use may_patterns::ratelimit::{Limiter, Quota, TokenBucket};

use crate::history::{self, AddError};
use crate::irc;
use crate::outbox::ClientId;
use crate::router::{Event, RouterHandle};

/// Threads that run password hashes. Each hash holds its 19 MiB while it
/// runs, so this bounds that memory (2 × 19 MiB), and on a small machine
/// more threads would not finish a queue of hashes sooner. Checks beyond
/// these park their own coroutine, never the router.
const HASH_THREADS: usize = 2;
/// Checks that wait for a hashing thread before a checker coroutine parks.
const HASH_QUEUE: usize = 64;

/// Account names follow the nick rules, up to the server's NICKLEN.
const MAX_NAME: usize = 30;
/// A longer password would not fit a 400-byte SASL PLAIN payload with a
/// 30-byte name given twice.
pub const MAX_PASSWORD: usize = 200;
/// The longest base64 SASL PLAIN payload accepted: one `AUTHENTICATE`
/// chunk (a payload of exactly 400 is followed by `AUTHENTICATE +`).
pub const MAX_SASL_PLAIN: usize = 400;

/// The reply to a wrong password and to an unknown account alike: a
/// guesser must not learn which names exist.
const WRONG: &str = "invalid account or password";
const TOO_MANY: &str = "too many attempts, try again later";

// ANCHOR: limits
/// How many password checks are admitted, per account name and per peer
/// address, before more are refused without hashing.
///
/// Every attempt counts, a successful one too: the units are taken before
/// the hash runs. Taking them only after a failed hash would leave the
/// door open while hashes run: a guesser with a thousand connections would
/// get a thousand guesses in before the first failure was counted.
/// Per-account limits also let anyone lock an account's owner out for a
/// minute by spending its attempts; the per-address limit makes that cost
/// addresses, and logging in stays possible from where the owner already is
/// (a client that is logged in stays logged in).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_account: Quota,
    pub per_peer: Quota,
}

impl Default for Limits {
    /// 5 attempts a minute per account, 20 a minute per address (a NAT
    /// can hide a few people; one person does not mistype 20 times).
    fn default() -> Limits {
        let minute = Duration::from_secs(60);
        Limits {
            per_account: Quota::new(5, minute, 5).expect("a valid constant quota"),
            per_peer: Quota::new(20, minute, 20).expect("a valid constant quota"),
        }
    }
}
// ANCHOR_END: limits

/// Keys each limiter keeps: past this many, the stalest key's count is
/// forgotten (so a flood of names or addresses cannot grow memory).
const LIMITER_KEYS: usize = 10_000;

// ANCHOR: accounts
/// The accounts, loaded once at start, and what checking them costs.
///
/// Accounts added with `--add-account` while the server runs are seen at
/// its next start: the table is read once, so no check touches SQLite.
pub struct Accounts {
    /// Casefolded name -> (name as registered, PHC string).
    known: HashMap<String, (String, String)>,
    argon2: Argon2<'static>,
    /// A hash of a random password, made with `argon2`'s parameters: an
    /// unknown name is verified against it, so it costs one hash like a
    /// known one and its answer comes back no sooner.
    decoy: String,
    per_account: Limiter<String, TokenBucket>,
    per_peer: Limiter<IpAddr, TokenBucket>,
    hashes: AtomicU64,
    limited: AtomicU64,
}
// ANCHOR_END: accounts

/// What a finished check says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right; the account's name as registered.
    LoggedIn(String),
    /// Refused, with the reason the client is told.
    Refused(&'static str),
}

/// Counts for the program's last line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountsReport {
    /// Password hashes run (one per admitted check).
    pub hashes: u64,
    /// Checks refused by the attempt limits, without a hash.
    pub limited: u64,
}

impl Accounts {
    /// Load accounts from the database (none if `db` is None), checked
    /// with argon2's default parameters and the default [`Limits`].
    /// Blocking: call it before serving, not on a coroutine.
    pub fn load(db: Option<&Path>) -> io::Result<Accounts> {
        Accounts::open(db, Params::DEFAULT, Limits::default())
    }

    /// As [`load`](Self::load), with `params` for the decoy hash (tests
    /// pass cheap ones; stored hashes carry their own) and `limits`.
    pub fn open(db: Option<&Path>, params: Params, limits: Limits) -> io::Result<Accounts> {
        let mut known = HashMap::new();
        if let Some(path) = db {
            let conn = history::open(Some(path))?;
            let rows = history::accounts(&conn)
                .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
            for (folded, name, phc) in rows {
                if PasswordHash::new(&phc).is_err() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: account {name}'s password hash is damaged",
                            path.display()
                        ),
                    ));
                }
                known.insert(folded, (name, phc));
            }
        }
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut secret = [0; 16];
        random(&mut secret)?;
        let decoy = hash(&argon2, &STANDARD.encode(secret))?;
        Ok(Accounts {
            known,
            argon2,
            decoy,
            per_account: Limiter::new(TokenBucket::new(limits.per_account), LIMITER_KEYS),
            per_peer: Limiter::new(TokenBucket::new(limits.per_peer), LIMITER_KEYS),
            hashes: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        })
    }

    /// Is there an account of this name (in any casing)?
    pub fn exists(&self, name: &str) -> bool {
        self.known.contains_key(&irc::casefold(name))
    }

    pub fn report(&self) -> AccountsReport {
        AccountsReport {
            hashes: self.hashes.load(Ordering::Relaxed),
            limited: self.limited.load(Ordering::Relaxed),
        }
    }

    // ANCHOR: check
    /// Check a password off the workers and send `Event::AuthChecked` to
    /// `reply` when done. Never blocks: the router calls it.
    pub fn check(
        self: &Arc<Self>,
        id: ClientId,
        peer: IpAddr,
        account: &str,
        password: &str,
        reply: RouterHandle,
    ) {
        let given = account.to_owned();
        self.verify_then(peer, account, password, move |verdict| {
            let (account, ok, why) = match verdict {
                Verdict::LoggedIn(name) => (name, true, None),
                Verdict::Refused(why) => (given, false, Some(why.to_owned())),
            };
            // Err: the router has stopped, nobody waits for the answer.
            let _ = reply.send(Event::AuthChecked {
                id,
                account,
                ok,
                why,
            });
        });
    }

    /// Decide on the limits now, then hash on a hashing thread in a
    /// coroutine of its own, and give `done` the verdict there.
    ///
    /// `done` always runs on that coroutine, a refusal too: the router
    /// calls this, and an answer sent from the router's own coroutine to
    /// its own full queue would park the only reader of that queue.
    pub fn verify_then<F>(self: &Arc<Self>, peer: IpAddr, account: &str, password: &str, done: F)
    where
        F: FnOnce(Verdict) + Send + 'static,
    {
        let folded = irc::casefold(account);
        // The address first: a guesser spraying many names from one place
        // is stopped there without spending the owners' attempts.
        let admitted = self.per_peer.check(&peer, 1).is_admitted()
            && self.per_account.check(&folded, 1).is_admitted();
        let known = self.known.get(&folded).cloned();
        let phc = known.as_ref().map_or(&self.decoy, |(_, phc)| phc).clone();
        let (argon2, password) = (self.argon2.clone(), password.to_owned());
        let me = self.clone();
        go!(move || {
            let verdict = if !admitted {
                me.limited.fetch_add(1, Ordering::Relaxed);
                Verdict::Refused(TOO_MANY)
            } else {
                me.hashes.fetch_add(1, Ordering::Relaxed);
                // The coroutine parks here; a hashing thread does the work.
                match hashers().run(move || verify(&argon2, &phc, &password)) {
                    Ok(true) => match known {
                        Some((name, _)) => Verdict::LoggedIn(name),
                        None => Verdict::Refused(WRONG),
                    },
                    Ok(false) => Verdict::Refused(WRONG),
                    Err(_) => Verdict::Refused("the password check failed"),
                }
            };
            done(verdict);
        });
    }
    // ANCHOR_END: check
}

/// The hashing threads, started on first use and kept for the process (a
/// pool dropped by the last checker would join its threads on a worker).
fn hashers() -> &'static BlockingPool {
    static POOL: OnceLock<BlockingPool> = OnceLock::new();
    POOL.get_or_init(|| {
        BlockingPool::new(HASH_THREADS, HASH_QUEUE).expect("cannot start the hashing threads")
    })
}

/// Does `password` match the PHC string? The hash's own parameters and
/// salt are used (so old hashes keep working when the defaults change);
/// argon2 compares the result in constant time.
fn verify(argon2: &Argon2, phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .is_ok_and(|parsed| argon2.verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A new PHC string for `password`, with a random 16-byte salt.
fn hash(argon2: &Argon2, password: &str) -> io::Result<String> {
    let mut salt = [0; 16];
    random(&mut salt)?;
    // password_hash's Error is Display only (no std::error::Error here).
    let failed = |e: argon2::password_hash::Error| io::Error::other(e.to_string());
    let salt = SaltString::encode_b64(&salt).map_err(failed)?;
    argon2
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(failed)
}

/// Fill `buf` from the operating system's random source, through rustls's
/// provider (ring): the server already links it for TLS.
fn random(buf: &mut [u8]) -> io::Result<()> {
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| io::Error::other("the operating system gave no random bytes"))
}

// ANCHOR: sasl
/// `AUTHENTICATE` PLAIN payload (RFC 4616): base64 of
/// `authzid NUL authcid NUL password`. Returns (authcid, password).
///
/// Strict: at most [`MAX_SASL_PLAIN`] base64 bytes with padding, UTF-8,
/// exactly three parts, a name and a password, and an authzid that is
/// empty or the same account (nobody logs in as someone else here).
pub fn decode_sasl_plain(b64: &str) -> Result<(String, String), &'static str> {
    if b64.len() > MAX_SASL_PLAIN {
        return Err("the payload is longer than 400 bytes");
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| "the payload is not base64")?;
    let text = String::from_utf8(bytes).map_err(|_| "the payload is not UTF-8")?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("PLAIN needs authzid, account and password separated by NUL");
    };
    if authcid.is_empty() || password.is_empty() {
        return Err("the account name or the password is empty");
    }
    if !authzid.is_empty() && irc::casefold(authzid) != irc::casefold(authcid) {
        return Err("logging in as another account is not supported");
    }
    Ok((authcid.to_owned(), password.to_owned()))
}
// ANCHOR_END: sasl

// ANCHOR: add_account
/// For `chat_server --db F --add-account NAME` (password from stdin) and
/// `--demo`: hash with argon2's defaults and store.
pub fn add_account(db: &Path, name: &str, password: &str) -> io::Result<()> {
    add_account_with(db, name, password, Params::DEFAULT)
}

/// As [`add_account`], hashing with `params`.
pub fn add_account_with(db: &Path, name: &str, password: &str, params: Params) -> io::Result<()> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
    if !irc::valid_nick(name, MAX_NAME) {
        return Err(invalid(format!(
            "account name {name:?} is not a valid nick (a letter or one of [ ] \\ ` _ ^ {{ | }} first, then those, digits or -, at most {MAX_NAME} bytes)"
        )));
    }
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(invalid(format!(
            "the password must be 1 to {MAX_PASSWORD} bytes, not {}",
            password.len()
        )));
    }
    let phc = hash(
        &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        password,
    )?;
    let conn = history::open(Some(db))?;
    match history::insert_account(&conn, name, &phc) {
        Ok(()) => Ok(()),
        Err(AddError::Exists) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("account {name} already exists in {}", db.display()),
        )),
        Err(AddError::Db(e)) => Err(io::Error::other(format!("{}: {e}", db.display()))),
    }
}
// ANCHOR_END: add_account

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The smallest argon2 cost there is: tests check logic, not cost.
    fn cheap() -> Params {
        Params::new(8, 1, 1, None).unwrap()
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn limits(per_account: u64, per_peer: u64) -> Limits {
        let hour = Duration::from_secs(3600);
        Limits {
            per_account: Quota::new(per_account, hour, per_account).unwrap(),
            per_peer: Quota::new(per_peer, hour, per_peer).unwrap(),
        }
    }

    /// A database with account Ann / s3cret, and its accounts.
    fn ann(limits: Limits) -> (tempfile::TempDir, Arc<Accounts>) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        add_account_with(&db, "Ann", "s3cret", cheap()).unwrap();
        let accounts = Accounts::open(Some(&db), cheap(), limits).unwrap();
        (dir, Arc::new(accounts))
    }

    /// Run one check and wait (bounded) for its verdict.
    fn verdict(accounts: &Arc<Accounts>, peer: IpAddr, name: &str, password: &str) -> Verdict {
        let (tx, rx) = may::sync::mpsc::channel();
        accounts.verify_then(peer, name, password, move |v| tx.send(v).unwrap());
        rx.recv_timeout(Duration::from_secs(20))
            .expect("a verdict in time")
    }

    #[test]
    fn the_right_password_logs_in_under_the_registered_name() {
        let (_dir, accounts) = ann(Limits::default());
        assert!(accounts.exists("ANN"));
        assert!(!accounts.exists("bob"));
        assert_eq!(
            verdict(&accounts, ip(1), "ann", "s3cret"),
            Verdict::LoggedIn("Ann".into())
        );
        assert_eq!(
            verdict(&accounts, ip(1), "Ann", "S3cret"),
            Verdict::Refused(WRONG)
        );
    }

    #[test]
    fn an_unknown_account_costs_a_hash_and_gets_the_same_answer() {
        let (_dir, accounts) = ann(Limits::default());
        let wrong = verdict(&accounts, ip(1), "Ann", "guess");
        let unknown = verdict(&accounts, ip(1), "nobody", "guess");
        assert_eq!(wrong, unknown);
        assert_eq!(accounts.report().hashes, 2);
    }

    #[test]
    fn attempts_past_an_accounts_quota_are_refused_without_hashing() {
        let (_dir, accounts) = ann(limits(2, 100));
        for peer in [ip(1), ip(2)] {
            assert_eq!(
                verdict(&accounts, peer, "ann", "guess"),
                Verdict::Refused(WRONG)
            );
        }
        // From a third address, with the right password: still refused.
        assert_eq!(
            verdict(&accounts, ip(3), "ann", "s3cret"),
            Verdict::Refused(TOO_MANY)
        );
        assert_eq!(
            accounts.report(),
            AccountsReport {
                hashes: 2,
                limited: 1
            }
        );
        // Other accounts are not affected.
        assert_eq!(
            verdict(&accounts, ip(3), "bob", "x"),
            Verdict::Refused(WRONG)
        );
    }

    #[test]
    fn attempts_past_an_addresss_quota_are_refused_for_every_name() {
        let (_dir, accounts) = ann(limits(100, 2));
        for name in ["bob", "carol"] {
            assert_eq!(
                verdict(&accounts, ip(1), name, "x"),
                Verdict::Refused(WRONG)
            );
        }
        assert_eq!(
            verdict(&accounts, ip(1), "ann", "s3cret"),
            Verdict::Refused(TOO_MANY)
        );
        assert_eq!(
            verdict(&accounts, ip(2), "ann", "s3cret"),
            Verdict::LoggedIn("Ann".into())
        );
        assert_eq!(
            accounts.report(),
            AccountsReport {
                hashes: 3,
                limited: 1
            }
        );
    }

    #[test]
    fn add_account_refuses_a_bad_name_a_bad_password_and_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        for name in ["", "1ann", "an n", "ann!", &"a".repeat(31)] {
            let err = add_account_with(&db, name, "pw", cheap()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        for password in ["", &"p".repeat(MAX_PASSWORD + 1)] {
            let err = add_account_with(&db, "ann", password, cheap()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        add_account_with(&db, "Ann[0]", "pw", cheap()).unwrap();
        let err = add_account_with(&db, "ann{0}", "other", cheap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("already exists"), "{err}");
    }

    #[test]
    fn add_account_stores_an_argon2id_hash_with_the_default_parameters() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        add_account(&db, "demo", "demo-password").unwrap();
        let conn = history::open(Some(&db)).unwrap();
        let rows = history::accounts(&conn).unwrap();
        assert_eq!(rows.len(), 1);
        let phc = &rows[0].2;
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("demo-password"));
    }

    #[test]
    fn a_damaged_hash_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let conn = history::open(Some(&db)).unwrap();
        history::insert_account(&conn, "ann", "not a hash").unwrap();
        let err = Accounts::open(Some(&db), cheap(), Limits::default())
            .err()
            .expect("refused");
        assert!(
            err.to_string()
                .contains("account ann's password hash is damaged"),
            "{err}"
        );
    }

    #[test]
    fn sasl_plain_is_decoded_strictly() {
        let b64 = |s: &str| STANDARD.encode(s);
        let ok = |s: &str| decode_sasl_plain(&b64(s));
        assert_eq!(ok("\0ann\0pw"), Ok(("ann".into(), "pw".into())));
        assert_eq!(
            ok("Ann\0ann\0p w:\u{e9}"),
            Ok(("ann".into(), "p w:\u{e9}".into()))
        );
        assert!(ok("bob\0ann\0pw").is_err(), "another account's authzid");
        assert!(ok("ann\0pw").is_err(), "two parts");
        assert!(ok("\0ann\0pw\0more").is_err(), "four parts");
        assert!(ok("\0\0pw").is_err(), "no name");
        assert!(ok("\0ann\0").is_err(), "no password");
        assert!(ok("").is_err(), "empty (AUTHENTICATE +)");
        assert!(decode_sasl_plain("not base64!").is_err());
        assert!(decode_sasl_plain("AGFubgBwdw").is_err(), "padding missing");
        assert!(
            decode_sasl_plain(&STANDARD.encode(b"\0ann\0\xff")).is_err(),
            "not UTF-8"
        );
        let longest = format!("\0ann\0{}", "p".repeat(295)); // 300 bytes: 400 in base64
        assert_eq!(b64(&longest).len(), MAX_SASL_PLAIN);
        assert!(ok(&longest).is_ok());
        assert_eq!(
            ok(&format!("{longest}ppp")),
            Err("the payload is longer than 400 bytes")
        );
    }
}
