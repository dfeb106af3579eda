//! The message router: one coroutine that owns every user, nick and room.
//!
//! Connections send it [`Event`]s over one bounded channel; it answers with
//! [`Delivery`] items for the broadcast stage, which keeps their order (so a
//! JOIN echo, the topic, NAMES and the history replay reach a client in
//! that order, and a room line is on disk before anyone sees it). Owning all
//! state in one coroutine means no locks and no lock order: a nick is taken
//! or not, a room exists or not, at one point in one sequence of events.
//!
//! The price is that the router must never wait on anything slow. It does no
//! I/O: pushing to an outbox never blocks (a client that does not read is
//! cut at its sendq), and a password check, which costs tens of
//! milliseconds of argon2, runs elsewhere ([`accounts::Accounts::check`])
//! and comes back as [`Event::AuthChecked`]. Each event costs the router
//! microseconds and a bounded amount of output: a line is at most 512 bytes,
//! so a JOIN names fewer than 170 rooms, and the lists that grow with the
//! server (LIST, WHO) stop at half the asker's sendq.
//!
//! All the protocol lives in [`State::handle`], which takes one event and
//! returns what to do, so it is tested without sockets or coroutines.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::SystemTime;

use may::coroutine::{Builder, JoinHandle};
use may::go;
use may_patterns::bounded;

use crate::accounts::{self, Accounts};
use crate::broadcast::{Broadcast, Delivery};
use crate::cli::Settings;
use crate::connection::Transport;
use crate::irc::numeric::*;
use crate::irc::{self, casefold, valid_channel, valid_nick, Message};
use crate::outbox::{ClientId, Line, Outbox};
use crate::rooms::{JoinError, Rooms, Topic};

/// Room names in one 319 (WHOIS) line: with the prefix, the nicks and the
/// numeric, the line stays far under 512 bytes.
const WHOIS_ROOMS_BYTES: usize = 300;

/// Events waiting for the router; a reader that finds the queue full parks,
/// which slows the clients sending, not the router.
pub const QUEUE: usize = 1024;

/// The router coroutine's stack, in words (64 KiB). The biggest events (a
/// JOIN as long as a line allows, WHO, NAMES and LIST of 300 users and 120
/// rooms, a QUIT seen by 299) used 1,747 words (14 KiB) in a debug build,
/// as may measured it in the `the_biggest_events_fit_in_half_the_router_stack`
/// test, which runs them on half this stack. Nothing the router runs
/// recurses, and no input makes its frames deeper: only longer loops.
pub const STACK_WORDS: usize = 0x2000;

/// The version in 002 and 004.
const VERSION: &str = concat!("chat_server-", env!("CARGO_PKG_VERSION"));

/// The capabilities offered in `CAP LS`.
const CAPS: [&str; 2] = ["server-time", "sasl"];

/// A SASL PLAIN payload comes in 400-byte base64 chunks; four are far more
/// than a name and a password need (ERR_SASLTOOLONG past that).
const SASL_MAX: usize = 4 * 400;

// ANCHOR: event
/// What connections (and the accounts checker) tell the router.
pub enum Event {
    /// A client connected; `outbox` is where its lines go.
    Connected {
        id: ClientId,
        peer: SocketAddr,
        outbox: Outbox,
        transport: Transport,
    },
    /// A well-formed line from a client.
    Line { id: ClientId, message: Message },
    /// A line that could not be used.
    Rejected { id: ClientId, problem: Problem },
    /// The reader ended: EOF, error, ping timeout, flood, sendq.
    Closed { id: ClientId, reason: String },
    /// A password check (SASL or PASS) finished.
    AuthChecked {
        id: ClientId,
        account: String,
        ok: bool,
        why: Option<String>,
    },
}

/// Why a line was rejected before parsing or by the parser.
#[derive(Debug)]
pub enum Problem {
    /// Longer than [`irc::MAX_LINE`].
    TooLong,
    NotUtf8,
    Malformed(irc::ParseError),
}
// ANCHOR_END: event

/// A password check for the loop to start (it is not the router's work).
#[derive(Debug)]
pub struct AuthRequest {
    pub id: ClientId,
    pub peer: IpAddr,
    pub account: String,
    pub password: String,
}

/// What handling an event asks for, in order.
pub enum Output {
    Deliver(Delivery),
    CheckAuth(AuthRequest),
}

/// What one router run saw, for the `stopped` line.
#[derive(Debug, Clone, Default)]
pub struct RouterReport {
    /// Most clients connected at once.
    pub clients_peak: usize,
    /// PRIVMSG and NOTICE lines routed (one per target).
    pub messages: u64,
}

// ANCHOR: handle
/// The sending side of the router's queue. Clone it for each connection.
#[derive(Clone)]
pub struct RouterHandle {
    tx: Arc<bounded::Sender<Event>>,
}

impl RouterHandle {
    /// Parks while the queue is full. Err: the router has stopped.
    pub fn send(&self, event: Event) -> Result<(), Event> {
        self.tx.send(event).map_err(|e| e.0)
    }
}

/// Starts the router coroutine. It ends, returning its report, once every
/// [`RouterHandle`] is dropped and the queue is drained. It keeps only a
/// weak reference to its own queue (to hand a password check a way back),
/// so it does not keep itself alive.
pub fn spawn(
    settings: Arc<Settings>,
    broadcast: Broadcast,
    accounts: Arc<Accounts>,
) -> io::Result<(RouterHandle, JoinHandle<RouterReport>)> {
    let (tx, rx) = bounded::channel(QUEUE);
    let tx = Arc::new(tx);
    let weak: Weak<bounded::Sender<Event>> = Arc::downgrade(&tx);
    let builder = Builder::new()
        .name("router".to_owned())
        .stack_size(STACK_WORDS);
    let router = go!(builder, move || {
        let known = accounts.clone();
        let mut state = State::new(settings, Box::new(move |name| known.exists(name)));
        for event in rx.iter() {
            for output in state.handle(event, SystemTime::now()) {
                match output {
                    // Err: the stage stopped, the server is going down;
                    // what is left to deliver has nobody to go to.
                    Output::Deliver(d) => drop(broadcast.send(d)),
                    Output::CheckAuth(r) => {
                        if let Some(tx) = weak.upgrade() {
                            let reply = RouterHandle { tx };
                            accounts.check(r.id, r.peer, &r.account, &r.password, reply);
                        }
                    }
                }
            }
        }
        state.report
    })?;
    Ok((RouterHandle { tx }, router))
}
// ANCHOR_END: handle

/// Where a client is in the SASL exchange or a PASS check.
enum Auth {
    Idle,
    /// `AUTHENTICATE PLAIN` accepted; base64 chunks so far.
    Sasl(String),
    /// A check is running; one at a time per client.
    Checking(Via),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Sasl,
    Pass,
}

/// One connected client, registered or not.
struct User {
    outbox: Outbox,
    peer: IpAddr,
    transport: Transport,
    /// The peer address as it appears in prefixes and WHO.
    host: String,
    nick: Option<String>,
    username: Option<String>,
    realname: String,
    registered: bool,
    /// CAP LS or REQ came before registration: wait for CAP END.
    cap_open: bool,
    sasl_cap: bool,
    pass: Option<String>,
    account: Option<String>,
    auth: Auth,
    /// Casefolded names of the rooms this user is in.
    rooms: BTreeSet<String>,
}

impl User {
    /// `*` until the client has a nick, as numerics are addressed.
    fn name(&self) -> &str {
        self.nick.as_deref().unwrap_or("*")
    }

    fn prefix(&self) -> String {
        format!(
            "{}!~{}@{}",
            self.name(),
            self.username.as_deref().unwrap_or("*"),
            self.host
        )
    }
}

// ANCHOR: state
/// Every user, nick and room, and the rules that change them.
pub struct State {
    settings: Arc<Settings>,
    /// Whether a name is an account (such a nick needs that account's login).
    is_account: Box<dyn Fn(&str) -> bool + Send>,
    users: HashMap<ClientId, User>,
    /// Casefolded nick -> its owner (registered or registering).
    nicks: HashMap<String, ClientId>,
    rooms: Rooms,
    created: String,
    report: RouterReport,
    out: Vec<Output>,
}

impl State {
    pub fn new(settings: Arc<Settings>, is_account: Box<dyn Fn(&str) -> bool + Send>) -> State {
        State {
            rooms: Rooms::new(settings.max_rooms),
            settings,
            is_account,
            users: HashMap::new(),
            nicks: HashMap::new(),
            created: irc::server_time(SystemTime::now()),
            report: RouterReport::default(),
            out: Vec::new(),
        }
    }

    /// Applies one event; returns what to deliver and what to check, in
    /// order. `now` dates topics.
    pub fn handle(&mut self, event: Event, now: SystemTime) -> Vec<Output> {
        match event {
            Event::Connected {
                id,
                peer,
                outbox,
                transport,
            } => self.connected(id, peer, outbox, transport),
            Event::Line { id, message } => {
                if self.users.contains_key(&id) {
                    self.line(id, message, now);
                }
            }
            Event::Rejected { id, problem } => self.rejected(id, problem),
            Event::Closed { id, reason } => self.quit(id, &reason),
            Event::AuthChecked {
                id,
                account,
                ok,
                why,
            } => self.auth_checked(id, account, ok, why),
        }
        mem::take(&mut self.out)
    }
    // ANCHOR_END: state

    fn connected(&mut self, id: ClientId, peer: SocketAddr, outbox: Outbox, transport: Transport) {
        let ip = peer.ip().to_canonical();
        let mut host = ip.to_string();
        // A parameter may not start with ':' ("::1" would in WHO replies).
        if host.starts_with(':') {
            host.insert(0, '0');
        }
        let user = User {
            outbox,
            peer: ip,
            transport,
            host,
            nick: None,
            username: None,
            realname: String::new(),
            registered: false,
            cap_open: false,
            sasl_cap: false,
            pass: None,
            account: None,
            auth: Auth::Idle,
            rooms: BTreeSet::new(),
        };
        self.users.insert(id, user);
        self.report.clients_peak = self.report.clients_peak.max(self.users.len());
    }

    // ANCHOR: dispatch
    fn line(&mut self, id: ClientId, m: Message, now: SystemTime) {
        let command = m.command_upper();
        let registered = self.users[&id].registered;
        let p = &m.params;
        match command.as_str() {
            "CAP" => self.cap(id, p),
            "PASS" => self.pass(id, p),
            "NICK" => self.nick(id, p),
            "USER" => self.user(id, p),
            "AUTHENTICATE" => self.authenticate(id, p),
            "PING" => self.ping(id, p),
            "PONG" => {}
            "QUIT" => {
                let reason = format!("Quit: {}", p.first().map_or("", String::as_str));
                self.quit(id, &reason);
            }
            _ if !registered => self.numeric(id, ERR_NOTREGISTERED, &[":You have not registered"]),
            "JOIN" => self.join(id, p),
            "PART" => self.part(id, p),
            "PRIVMSG" => self.message(id, "PRIVMSG", p),
            "NOTICE" => self.message(id, "NOTICE", p),
            "TOPIC" => self.topic(id, p, now),
            "NAMES" => self.names(id, p),
            "LIST" => self.list(id, p),
            "WHO" => self.who(id, p),
            "WHOIS" => self.whois(id, p),
            "MODE" => self.mode(id, p),
            _ => self.numeric(id, ERR_UNKNOWNCOMMAND, &[&m.command, ":Unknown command"]),
        }
    }
    // ANCHOR_END: dispatch

    // ------------------------------------------------------------ output --

    fn deliver(&mut self, d: Delivery) {
        self.out.push(Output::Deliver(d));
    }

    /// One line to one user.
    fn send(&mut self, id: ClientId, line: String) {
        let to = self.users[&id].outbox.clone();
        self.deliver(Delivery::To {
            to,
            line: Line::from(clean(&line)),
        });
    }

    /// `:server CODE nick params...`; a parameter written with a leading
    /// ':' is the trailing one (the caller says where the text starts).
    fn numeric(&mut self, id: ClientId, code: &str, params: &[&str]) {
        let line = self.numeric_line(id, code, params);
        self.send(id, line);
    }

    fn numeric_line(&self, id: ClientId, code: &str, params: &[&str]) -> String {
        let mut line = format!(
            ":{} {} {}",
            self.settings.server_name,
            code,
            self.users[&id].name()
        );
        for (i, p) in params.iter().enumerate() {
            line.push(' ');
            if i + 1 == params.len() && p.starts_with(':') {
                line.push_str(p);
            } else {
                // A word echoed from the client (`JOIN :#a b`) must stay one word.
                line.push_str(&word(p));
            }
        }
        line
    }

    /// A line from the server itself (`:server COMMAND params`).
    fn server_line(&self, command: &str, params: &[&str]) -> String {
        Message::new(command, params)
            .with_prefix(&self.settings.server_name)
            .to_string()
    }

    /// Everyone sharing a room with `id`, each once, without `id`.
    fn neighbours(&self, id: ClientId) -> Vec<Outbox> {
        let mut ids = BTreeSet::new();
        for key in &self.users[&id].rooms {
            if let Some(room) = self.rooms.get(key) {
                ids.extend(room.members().filter(|&m| m != id));
            }
        }
        ids.iter().map(|m| self.users[m].outbox.clone()).collect()
    }

    fn members(&self, room: &str) -> Vec<Outbox> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members().map(|m| self.users[&m].outbox.clone()).collect()
        })
    }

    /// What a reply may hold before the asker's sendq is in danger.
    fn budget(&self) -> usize {
        self.settings.sendq / 2
    }

    // ------------------------------------------------------ registration --

    // ANCHOR: cap
    fn cap(&mut self, id: ClientId, p: &[String]) {
        let Some(sub) = p.first().map(|s| s.to_ascii_uppercase()) else {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["CAP", ":Not enough parameters"]);
        };
        let user = self.users.get_mut(&id).expect("caller checked");
        let nick = user.name().to_string();
        let line = match sub.as_str() {
            "LS" => {
                user.cap_open |= !user.registered;
                // CAP 302 clients learn the mechanisms from the value.
                let sasl = if p
                    .get(1)
                    .is_some_and(|v| v.parse::<u32>().unwrap_or(0) >= 302)
                {
                    "sasl=PLAIN"
                } else {
                    "sasl"
                };
                format!("server-time {sasl}")
            }
            "LIST" => {
                let mut on = Vec::new();
                if user.outbox.wants_server_time() {
                    on.push("server-time");
                }
                if user.sasl_cap {
                    on.push("sasl");
                }
                on.join(" ")
            }
            "REQ" => {
                user.cap_open |= !user.registered;
                let wanted = p.get(1).map_or("", String::as_str);
                let known = wanted
                    .split(' ')
                    .filter(|c| !c.is_empty())
                    .all(|c| CAPS.contains(&c.trim_start_matches('-')));
                // All or nothing (IRCv3 capability negotiation).
                let verdict = if known { "ACK" } else { "NAK" };
                if known {
                    for cap in wanted.split(' ').filter(|c| !c.is_empty()) {
                        let on = !cap.starts_with('-');
                        match cap.trim_start_matches('-') {
                            "server-time" => user.outbox.set_server_time(on),
                            _ => user.sasl_cap = on,
                        }
                    }
                }
                let line = self.server_line("CAP", &[&nick, verdict, wanted]);
                return self.send(id, line);
            }
            "END" => {
                user.cap_open = false;
                if matches!(user.auth, Auth::Sasl(_)) {
                    user.auth = Auth::Idle;
                    self.numeric(id, ERR_SASLABORTED, &[":SASL authentication aborted"]);
                }
                return self.try_register(id);
            }
            _ => {
                let sub = p[0].clone();
                return self.numeric(id, ERR_INVALIDCAPCMD, &[&sub, ":Invalid CAP command"]);
            }
        };
        let line = self.server_line("CAP", &[&nick, &sub, &line]);
        self.send(id, line);
    }
    // ANCHOR_END: cap

    fn pass(&mut self, id: ClientId, p: &[String]) {
        let user = self.users.get_mut(&id).expect("caller checked");
        if user.registered {
            return self.numeric(id, ERR_ALREADYREGISTERED, &[":You may not reregister"]);
        }
        match p.first() {
            Some(password) => user.pass = Some(password.clone()),
            None => self.numeric(id, ERR_NEEDMOREPARAMS, &["PASS", ":Not enough parameters"]),
        }
    }

    // ANCHOR: nick
    fn nick(&mut self, id: ClientId, p: &[String]) {
        let Some(nick) = p.first().filter(|n| !n.is_empty()).cloned() else {
            return self.numeric(id, ERR_NONICKNAMEGIVEN, &[":No nickname given"]);
        };
        if !valid_nick(&nick, self.settings.nick_len) {
            return self.numeric(id, ERR_ERRONEUSNICKNAME, &[&nick, ":Erroneous nickname"]);
        }
        let key = casefold(&nick);
        if self.nicks.get(&key).is_some_and(|&owner| owner != id) {
            return self.numeric(
                id,
                ERR_NICKNAMEINUSE,
                &[&nick, ":Nickname is already in use"],
            );
        }
        let user = &self.users[&id];
        if user.nick.as_deref() == Some(nick.as_str()) {
            return;
        }
        if user.registered {
            if !self.may_use(id, &nick) {
                return self.registered_nick(id, &nick);
            }
            // The user and everyone sharing a room see the change once.
            let line = format!(":{} NICK {}", user.prefix(), nick);
            let mut to = self.neighbours(id);
            to.push(user.outbox.clone());
            self.deliver(Delivery::Fanout {
                to,
                line: Line::from(line),
            });
        }
        self.set_nick(id, Some(nick));
        self.try_register(id);
    }

    /// A nick that is an account's name is that account's: only a client
    /// logged in as it may use it.
    fn may_use(&self, id: ClientId, nick: &str) -> bool {
        let folded = casefold(nick);
        !(self.is_account)(&folded)
            || self.users[&id].account.as_deref().map(casefold) == Some(folded)
    }

    fn registered_nick(&mut self, id: ClientId, nick: &str) {
        self.numeric(
            id,
            ERR_NICKNAMEINUSE,
            &[
                nick,
                ":Nickname is registered to an account: log in with SASL or PASS to use it",
            ],
        );
    }

    /// Moves `id`'s claim on a nick (None: drops it).
    fn set_nick(&mut self, id: ClientId, nick: Option<String>) {
        let user = self.users.get_mut(&id).expect("caller checked");
        if let Some(old) = user.nick.take() {
            self.nicks.remove(&casefold(&old));
        }
        if let Some(new) = &nick {
            self.nicks.insert(casefold(new), id);
        }
        user.nick = nick;
    }
    // ANCHOR_END: nick

    fn user(&mut self, id: ClientId, p: &[String]) {
        let user = self.users.get_mut(&id).expect("caller checked");
        if user.registered || user.username.is_some() {
            return self.numeric(id, ERR_ALREADYREGISTERED, &[":You may not reregister"]);
        }
        if p.len() < 4 {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["USER", ":Not enough parameters"]);
        }
        // The username goes into every prefix: keep it short and plain.
        let name: String = p[0]
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            .take(10)
            .collect();
        user.username = Some(if name.is_empty() { "user".into() } else { name });
        user.realname = truncate(&p[3], 50).to_string();
        self.try_register(id);
    }

    // ANCHOR: register
    /// Completes registration once NICK and USER are in, CAP is over and no
    /// password check is running: first PASS (if sent), then the rule that
    /// an account's nick needs its login, then the welcome.
    fn try_register(&mut self, id: ClientId) {
        let user = self.users.get_mut(&id).expect("caller checked");
        let ready = !user.registered
            && user.nick.is_some()
            && user.username.is_some()
            && !user.cap_open
            && matches!(user.auth, Auth::Idle);
        if !ready {
            return;
        }
        if let Some(pass) = user.pass.take() {
            // `PASS account:password`, or a password for the nick's account.
            let nick = user.name().to_string();
            let (account, password) = match pass.split_once(':') {
                Some((name, rest)) if (self.is_account)(&casefold(name)) => {
                    (name.to_string(), rest.to_string())
                }
                _ => (nick, pass),
            };
            let user = self.users.get_mut(&id).expect("caller checked");
            user.auth = Auth::Checking(Via::Pass);
            let peer = user.peer;
            self.out.push(Output::CheckAuth(AuthRequest {
                id,
                peer,
                account,
                password,
            }));
            return;
        }
        let nick = user.name().to_string();
        if !self.may_use(id, &nick) {
            self.registered_nick(id, &nick);
            return self.set_nick(id, None);
        }
        self.welcome(id);
    }

    fn welcome(&mut self, id: ClientId) {
        let s = self.settings.clone();
        let user = self.users.get_mut(&id).expect("caller checked");
        user.registered = true;
        user.outbox.set_registered();
        let (prefix, transport) = (user.prefix(), user.transport);
        let over = match transport {
            Transport::Plain => "plain TCP",
            Transport::Tls => "TLS",
            Transport::WebSocket => "WebSocket",
        };
        let srv = s.server_name.as_str();
        let welcome = format!(":Welcome to the {srv} IRC network, {prefix}");
        let host = format!(":Your host is {srv}, running version {VERSION}, connected over {over}");
        let created = format!(":This server was created {}", self.created);
        let isupport = [
            "CASEMAPPING=rfc1459".to_string(),
            "CHANTYPES=#".into(),
            "CHANMODES=,,,n".into(),
            format!("CHANLIMIT=#:{}", s.max_rooms_per_client),
            format!("NICKLEN={}", s.nick_len),
            format!("CHANNELLEN={}", s.channel_len),
            format!("TOPICLEN={}", s.topic_len),
            "UTF8ONLY".into(),
            format!("NETWORK={srv}"),
            ":are supported by this server".into(),
        ];
        let isupport: Vec<&str> = isupport.iter().map(String::as_str).collect();
        let motd_start = format!(":- {srv} Message of the day -");
        let history = format!(
            ":- A room's last {} lines are replayed when you join it.",
            s.history
        );
        self.numeric(id, RPL_WELCOME, &[&welcome]);
        self.numeric(id, RPL_YOURHOST, &[&host]);
        self.numeric(id, RPL_CREATED, &[&created]);
        // User mode i (nobody is listed by a WHO that names no room or
        // nick) and room mode n (no messages from outside) are the rules
        // this server always applies; neither can be changed.
        self.numeric(id, RPL_MYINFO, &[srv, VERSION, "i", "n"]);
        self.numeric(id, RPL_ISUPPORT, &isupport);
        self.numeric(id, RPL_MOTDSTART, &[&motd_start]);
        self.numeric(id, RPL_MOTD, &[":- Make a room by joining it: /join #name"]);
        self.numeric(id, RPL_MOTD, &[&history]);
        self.numeric(id, RPL_ENDOFMOTD, &[":End of /MOTD command."]);
    }
    // ANCHOR_END: register

    // ANCHOR: sasl
    fn authenticate(&mut self, id: ClientId, p: &[String]) {
        let Some(arg) = p.first().cloned() else {
            return self.numeric(
                id,
                ERR_NEEDMOREPARAMS,
                &["AUTHENTICATE", ":Not enough parameters"],
            );
        };
        let user = self.users.get_mut(&id).expect("caller checked");
        if user.account.is_some() {
            return self.numeric(id, ERR_SASLALREADY, &[":You have already authenticated"]);
        }
        if user.registered {
            return self.numeric(
                id,
                ERR_SASLFAIL,
                &[":SASL is only available before registration"],
            );
        }
        if arg == "*" {
            user.auth = Auth::Idle;
            return self.numeric(id, ERR_SASLABORTED, &[":SASL authentication aborted"]);
        }
        match &mut user.auth {
            Auth::Checking(_) => {
                self.numeric(id, ERR_SASLFAIL, &[":A login is already being checked"])
            }
            Auth::Idle if arg.eq_ignore_ascii_case("PLAIN") => {
                user.auth = Auth::Sasl(String::new());
                let line = Message::new("AUTHENTICATE", &["+"]).to_string();
                self.send(id, line);
            }
            Auth::Idle => {
                self.numeric(
                    id,
                    RPL_SASLMECHS,
                    &["PLAIN", ":are available SASL mechanisms"],
                );
                self.numeric(id, ERR_SASLFAIL, &[":SASL authentication failed"]);
            }
            Auth::Sasl(payload) => {
                if arg != "+" {
                    payload.push_str(&arg);
                }
                if payload.len() > SASL_MAX {
                    user.auth = Auth::Idle;
                    return self.numeric(id, ERR_SASLTOOLONG, &[":SASL message too long"]);
                }
                // A 400-byte chunk means more follow.
                if arg.len() == 400 {
                    return;
                }
                let payload = mem::take(payload);
                match accounts::decode_sasl_plain(&payload) {
                    Ok((account, password)) => {
                        user.auth = Auth::Checking(Via::Sasl);
                        let peer = user.peer;
                        self.out.push(Output::CheckAuth(AuthRequest {
                            id,
                            peer,
                            account,
                            password,
                        }));
                    }
                    Err(why) => {
                        user.auth = Auth::Idle;
                        let text = format!(":SASL authentication failed: {why}");
                        self.numeric(id, ERR_SASLFAIL, &[&text]);
                    }
                }
            }
        }
    }

    fn auth_checked(&mut self, id: ClientId, account: String, ok: bool, why: Option<String>) {
        let Some(user) = self.users.get_mut(&id) else {
            return; // gone while its password was checked
        };
        let Auth::Checking(via) = user.auth else {
            return;
        };
        user.auth = Auth::Idle;
        let why = why.map_or(String::new(), |w| format!(" ({w})"));
        match (via, ok) {
            (Via::Sasl, true) => {
                user.account = Some(account.clone());
                let prefix = user.prefix();
                let text = format!(":You are now logged in as {account}");
                self.numeric(id, RPL_LOGGEDIN, &[&prefix, &account, &text]);
                self.numeric(id, RPL_SASLSUCCESS, &[":SASL authentication successful"]);
                self.try_register(id);
            }
            (Via::Sasl, false) => {
                let text = format!(":SASL authentication failed{why}");
                self.numeric(id, ERR_SASLFAIL, &[&text]);
                self.try_register(id);
            }
            (Via::Pass, true) => {
                user.account = Some(account.clone());
                let prefix = user.prefix();
                let text = format!(":You are now logged in as {account}");
                self.numeric(id, RPL_LOGGEDIN, &[&prefix, &account, &text]);
                self.try_register(id);
            }
            (Via::Pass, false) => {
                let text = format!(":Password incorrect{why}");
                self.numeric(id, ERR_PASSWDMISMATCH, &[&text]);
                self.quit(id, "Bad password");
            }
        }
    }
    // ANCHOR_END: sasl

    // ----------------------------------------------------------- rooms --

    // ANCHOR: join
    fn join(&mut self, id: ClientId, p: &[String]) {
        let Some(list) = p.first().cloned() else {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["JOIN", ":Not enough parameters"]);
        };
        if list == "0" {
            let rooms: Vec<String> = self.users[&id].rooms.iter().cloned().collect();
            for key in rooms {
                let name = self.rooms.get(&key).map(|r| r.name.clone()).unwrap_or(key);
                self.leave(id, &name, "Left all rooms");
            }
            return;
        }
        for name in list.split(',').filter(|n| !n.is_empty()) {
            self.join_one(id, name);
        }
    }

    fn join_one(&mut self, id: ClientId, name: &str) {
        if !valid_channel(name, self.settings.channel_len) {
            return self.numeric(id, ERR_NOSUCHCHANNEL, &[name, ":Illegal channel name"]);
        }
        let user = &self.users[&id];
        let key = casefold(name);
        if user.rooms.contains(&key) {
            return;
        }
        if user.rooms.len() >= self.settings.max_rooms_per_client {
            return self.numeric(
                id,
                ERR_TOOMANYCHANNELS,
                &[name, ":You have joined too many channels"],
            );
        }
        if let Err(JoinError::ServerFull) = self.rooms.join(name, id) {
            // 403, not 405: the client is under its own limit; the room
            // cannot be made. Clients show the text.
            return self.numeric(
                id,
                ERR_NOSUCHCHANNEL,
                &[name, ":Too many rooms on this server"],
            );
        }
        let user = self.users.get_mut(&id).expect("caller checked");
        user.rooms.insert(key);
        let room = self.rooms.get(name).expect("just joined");
        let name = room.name.clone();
        let topic = room.topic.clone();
        let line = format!(":{} JOIN {}", user.prefix(), name);
        let to = self.members(&name);
        self.deliver(Delivery::Fanout {
            to,
            line: Line::from(line),
        });
        if let Some(t) = topic {
            self.topic_reply(id, &name, &t);
        }
        self.names_of(id, &name);
        if self.settings.history > 0 {
            let to = self.users[&id].outbox.clone();
            self.deliver(Delivery::Replay {
                room: name,
                to,
                limit: self.settings.history,
            });
        }
    }
    // ANCHOR_END: join

    fn part(&mut self, id: ClientId, p: &[String]) {
        let Some(list) = p.first().cloned() else {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["PART", ":Not enough parameters"]);
        };
        let reason = p.get(1).cloned().unwrap_or_default();
        for name in list.split(',').filter(|n| !n.is_empty()) {
            match self.rooms.get(name) {
                None => self.numeric(id, ERR_NOSUCHCHANNEL, &[name, ":No such channel"]),
                Some(room) if !room.has(id) => {
                    self.numeric(id, ERR_NOTONCHANNEL, &[name, ":You're not on that channel"])
                }
                Some(room) => {
                    let name = room.name.clone();
                    self.leave(id, &name, &reason);
                }
            }
        }
    }

    /// `id` leaves `name` (a member): everyone in it, `id` too, sees PART.
    fn leave(&mut self, id: ClientId, name: &str, reason: &str) {
        let user = self.users.get_mut(&id).expect("caller checked");
        user.rooms.remove(&casefold(name));
        let line = Message::new("PART", &[name, reason])
            .with_prefix(&user.prefix())
            .to_string();
        let to = self.members(name);
        self.rooms.leave(name, id);
        self.deliver(Delivery::Fanout {
            to,
            line: Line::from(line),
        });
    }

    // ANCHOR: message
    fn message(&mut self, id: ClientId, command: &'static str, p: &[String]) {
        // RFC 1459 4.4.2: no error reply is ever sent for a NOTICE.
        let errors = command == "PRIVMSG";
        let (targets, text) = match p {
            [targets, text, ..] if !text.is_empty() => (targets.clone(), clean(text)),
            _ if !errors => return,
            [] => {
                let text = format!(":No recipient given ({command})");
                return self.numeric(id, ERR_NORECIPIENT, &[&text]);
            }
            _ => return self.numeric(id, ERR_NOTEXTTOSEND, &[":No text to send"]),
        };
        let prefix = self.users[&id].prefix();
        for target in targets.split(',').filter(|t| !t.is_empty()) {
            // What another client receives must fit in one 512-byte line.
            let head = prefix.len() + command.len() + target.len() + 5;
            let text = truncate(&text, (irc::MAX_LINE - 2).saturating_sub(head)).to_string();
            if target.starts_with('#') {
                match self.rooms.get(target) {
                    None if errors => {
                        self.numeric(id, ERR_NOSUCHCHANNEL, &[target, ":No such channel"])
                    }
                    Some(room) if !room.has(id) && errors => self.numeric(
                        id,
                        ERR_CANNOTSENDTOCHAN,
                        &[target, ":Cannot send to channel"],
                    ),
                    Some(room) if room.has(id) => {
                        let room_name = room.name.clone();
                        let to = room
                            .members()
                            .filter(|&m| m != id)
                            .map(|m| self.users[&m].outbox.clone())
                            .collect();
                        let from = self.users[&id].outbox.clone();
                        self.report.messages += 1;
                        self.deliver(Delivery::Room {
                            room: room_name,
                            prefix: prefix.clone(),
                            command,
                            text,
                            to,
                            from,
                        });
                    }
                    _ => {}
                }
            } else {
                match self.nicks.get(&casefold(target)).copied() {
                    Some(to) if self.users[&to].registered => {
                        let line = Message::new(command, &[self.users[&to].name(), &text])
                            .with_prefix(&prefix)
                            .to_string();
                        self.report.messages += 1;
                        self.send(to, line);
                    }
                    _ if errors => {
                        self.numeric(id, ERR_NOSUCHNICK, &[target, ":No such nick/channel"])
                    }
                    _ => {}
                }
            }
        }
    }
    // ANCHOR_END: message

    fn topic(&mut self, id: ClientId, p: &[String], now: SystemTime) {
        let Some(name) = p.first().cloned() else {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["TOPIC", ":Not enough parameters"]);
        };
        let Some(room) = self.rooms.get(&name) else {
            return self.numeric(id, ERR_NOSUCHCHANNEL, &[&name, ":No such channel"]);
        };
        let name = room.name.clone();
        let Some(text) = p.get(1) else {
            return match room.topic.clone() {
                Some(t) => self.topic_reply(id, &name, &t),
                None => self.numeric(id, RPL_NOTOPIC, &[&name, ":No topic is set"]),
            };
        };
        if !room.has(id) {
            return self.numeric(
                id,
                ERR_NOTONCHANNEL,
                &[&name, ":You're not on that channel"],
            );
        }
        let text = truncate(&clean(text), self.settings.topic_len).to_string();
        let user = &self.users[&id];
        let line = Message::new("TOPIC", &[&name, &text])
            .with_prefix(&user.prefix())
            .to_string();
        let topic = (!text.is_empty()).then(|| Topic {
            text,
            set_by: user.name().to_string(),
            set_at: now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        self.rooms.set_topic(&name, topic);
        let to = self.members(&name);
        self.deliver(Delivery::Fanout {
            to,
            line: Line::from(line),
        });
    }

    fn topic_reply(&mut self, id: ClientId, name: &str, t: &Topic) {
        let text = format!(":{}", t.text);
        self.numeric(id, RPL_TOPIC, &[name, &text]);
        self.numeric(
            id,
            RPL_TOPICWHOTIME,
            &[name, &t.set_by, &t.set_at.to_string()],
        );
    }

    fn names(&mut self, id: ClientId, p: &[String]) {
        let Some(list) = p.first().cloned() else {
            // Every user on the server is not an answer a client can use.
            return self.numeric(id, RPL_ENDOFNAMES, &["*", ":End of /NAMES list"]);
        };
        for name in list.split(',').filter(|n| !n.is_empty()) {
            match self.rooms.get(name) {
                Some(room) => {
                    let name = room.name.clone();
                    self.names_of(id, &name);
                }
                None => self.numeric(id, RPL_ENDOFNAMES, &[name, ":End of /NAMES list"]),
            }
        }
    }

    // ANCHOR: names
    /// 353 lines with as many nicks as fit in 512 bytes, then 366.
    fn names_of(&mut self, id: ClientId, name: &str) {
        let head = self.numeric_line(id, RPL_NAMREPLY, &["=", name, ":"]);
        let nicks: Vec<String> = self.rooms.get(name).map_or_else(Vec::new, |room| {
            room.members()
                .map(|m| self.users[&m].name().to_string())
                .collect()
        });
        let mut line = head.clone();
        for nick in nicks {
            if line.len() > head.len() && line.len() + 1 + nick.len() > irc::MAX_LINE - 2 {
                let full = mem::replace(&mut line, head.clone());
                self.send(id, full);
            }
            if line.len() > head.len() {
                line.push(' ');
            }
            line.push_str(&nick);
        }
        if line.len() > head.len() {
            self.send(id, line);
        }
        self.numeric(id, RPL_ENDOFNAMES, &[name, ":End of /NAMES list"]);
    }
    // ANCHOR_END: names

    fn list(&mut self, id: ClientId, p: &[String]) {
        let wanted: Option<BTreeSet<String>> = p
            .first()
            .map(|list| list.split(',').map(casefold).collect());
        let rows: Vec<(String, usize, String)> = self
            .rooms
            .iter()
            .filter(|r| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.contains(&casefold(&r.name)))
            })
            .map(|r| {
                let topic = r.topic.as_ref().map_or("", |t| t.text.as_str());
                (r.name.clone(), r.len(), format!(":{topic}"))
            })
            .collect();
        self.numeric(id, RPL_LISTSTART, &["Channel", ":Users  Name"]);
        let mut spent = 0;
        let total = rows.len();
        for (i, (name, count, topic)) in rows.into_iter().enumerate() {
            let line = self.numeric_line(id, RPL_LIST, &[&name, &count.to_string(), &topic]);
            spent += line.len() + 2;
            if spent > self.budget() {
                let text =
                    format!("LIST stopped after {i} of {total} rooms: name the rooms you want");
                let notice = self.server_line("NOTICE", &[self.users[&id].name(), &text]);
                self.send(id, notice);
                break;
            }
            self.send(id, line);
        }
        self.numeric(id, RPL_LISTEND, &[":End of /LIST"]);
    }

    fn who(&mut self, id: ClientId, p: &[String]) {
        let Some(mask) = p.first().cloned() else {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["WHO", ":Not enough parameters"]);
        };
        let members: Vec<(String, ClientId)> = if let Some(room) = self.rooms.get(&mask) {
            room.members().map(|m| (room.name.clone(), m)).collect()
        } else if let Some(&m) = self.nicks.get(&casefold(&mask)) {
            vec![("*".to_string(), m)]
        } else {
            Vec::new()
        };
        let mut spent = 0;
        for (room, m) in members {
            let u = &self.users[&m];
            if !u.registered {
                continue;
            }
            let user = format!("~{}", u.username.as_deref().unwrap_or("*"));
            let real = format!(":0 {}", u.realname);
            let (host, nick) = (u.host.clone(), u.name().to_string());
            let srv = self.settings.server_name.clone();
            let line = self.numeric_line(
                id,
                RPL_WHOREPLY,
                &[&room, &user, &host, &srv, &nick, "H", &real],
            );
            spent += line.len() + 2;
            if spent > self.budget() {
                break;
            }
            self.send(id, line);
        }
        self.numeric(id, RPL_ENDOFWHO, &[&mask, ":End of WHO list"]);
    }

    /// `WHOIS [server] nick`: who a user is, from where, in which rooms,
    /// and under which account; 401 for a nick nobody has registered.
    fn whois(&mut self, id: ClientId, p: &[String]) {
        // With two parameters the first names a server: there is only this one.
        let Some(target) = p.last().cloned() else {
            return self.numeric(id, ERR_NONICKNAMEGIVEN, &[":No nickname given"]);
        };
        let found = self.nicks.get(&casefold(&target)).copied();
        let Some(u) = found.map(|m| &self.users[&m]).filter(|u| u.registered) else {
            self.numeric(id, ERR_NOSUCHNICK, &[&target, ":No such nick/channel"]);
            return self.numeric(id, RPL_ENDOFWHOIS, &[&target, ":End of /WHOIS list"]);
        };
        let nick = u.name().to_string();
        let user = format!("~{}", u.username.as_deref().unwrap_or("*"));
        let (host, real) = (u.host.clone(), format!(":{}", u.realname));
        let account = u.account.clone();
        let rooms: Vec<String> = (u.rooms.iter())
            .filter_map(|r| self.rooms.get(r).map(|room| room.name.clone()))
            .collect();
        let server = self.settings.server_name.clone();
        self.numeric(id, RPL_WHOISUSER, &[&nick, &user, &host, "*", &real]);
        // The rooms in as many 319 lines as it takes to keep each one short.
        let mut line = String::new();
        for room in rooms {
            if !line.is_empty() && line.len() + room.len() > WHOIS_ROOMS_BYTES {
                self.numeric(id, RPL_WHOISCHANNELS, &[&nick, &format!(":{line}")]);
                line.clear();
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&room);
        }
        if !line.is_empty() {
            self.numeric(id, RPL_WHOISCHANNELS, &[&nick, &format!(":{line}")]);
        }
        self.numeric(id, RPL_WHOISSERVER, &[&nick, &server, ":chat_server"]);
        if let Some(account) = account {
            self.numeric(id, RPL_WHOISACCOUNT, &[&nick, &account, ":is logged in as"]);
        }
        self.numeric(id, RPL_ENDOFWHOIS, &[&nick, ":End of /WHOIS list"]);
    }

    /// Modes can be read, never changed: `i` for users, `n` for rooms.
    fn mode(&mut self, id: ClientId, p: &[String]) {
        let Some(target) = p.first().cloned() else {
            return self.numeric(id, ERR_NEEDMOREPARAMS, &["MODE", ":Not enough parameters"]);
        };
        let change = p.get(1).cloned();
        if target.starts_with('#') {
            let Some(room) = self.rooms.get(&target) else {
                return self.numeric(id, ERR_NOSUCHCHANNEL, &[&target, ":No such channel"]);
            };
            let name = room.name.clone();
            match change.as_deref() {
                None => self.numeric(id, RPL_CHANNELMODEIS, &[&name, "+n"]),
                // irssi and WeeChat ask for the ban list on join.
                Some("b") | Some("+b") => {
                    self.numeric(id, RPL_ENDOFBANLIST, &[&name, ":End of channel ban list"])
                }
                Some(_) => self.numeric(
                    id,
                    ERR_CHANOPRIVSNEEDED,
                    &[&name, ":Room modes cannot be changed here"],
                ),
            }
        } else if casefold(&target) != casefold(self.users[&id].name()) {
            self.numeric(
                id,
                ERR_USERSDONTMATCH,
                &[":Cannot change mode for other users"],
            )
        } else if let Some(change) = change {
            // Everyone is +i already: irssi's `MODE nick +i` on connect
            // changes nothing, so it gets nothing back.
            if !change.trim_start_matches('+').chars().all(|c| c == 'i') {
                self.numeric(
                    id,
                    ERR_UMODEUNKNOWNFLAG,
                    &[":User modes cannot be changed here"],
                )
            }
        } else {
            self.numeric(id, RPL_UMODEIS, &["+i"])
        }
    }

    // ------------------------------------------------------- lifecycle --

    fn ping(&mut self, id: ClientId, p: &[String]) {
        match p.first() {
            Some(token) => {
                let line = self.server_line("PONG", &[&self.settings.server_name, token]);
                self.send(id, line);
            }
            None => self.numeric(id, ERR_NOORIGIN, &[":No origin specified"]),
        }
    }

    fn rejected(&mut self, id: ClientId, problem: Problem) {
        if !self.users.contains_key(&id) {
            return;
        }
        match problem {
            Problem::TooLong => self.numeric(id, ERR_INPUTTOOLONG, &[":Input line was too long"]),
            Problem::NotUtf8 => {
                // IRCv3 UTF8ONLY: the standard reply, not a numeric.
                let line = self.server_line(
                    "FAIL",
                    &[
                        "*",
                        "INVALID_UTF8",
                        "Message rejected, your IRC software MUST use UTF-8",
                    ],
                );
                self.send(id, line);
            }
            // RFC 1459 2.3.1: empty lines are silently ignored.
            Problem::Malformed(irc::ParseError::Empty) => {}
            Problem::Malformed(e) => {
                let text = format!(":Malformed line: {e}");
                self.numeric(id, ERR_UNKNOWNERROR, &["*", &text]);
            }
        }
    }

    // ANCHOR: quit
    /// The client is gone or going: everyone sharing a room sees QUIT, its
    /// nick is free, empty rooms go, and its outbox sends ERROR and closes.
    fn quit(&mut self, id: ClientId, reason: &str) {
        if !self.users.contains_key(&id) {
            return; // QUIT first, then the reader's Closed
        }
        let to = self.neighbours(id);
        let prefix = self.users[&id].prefix();
        self.set_nick(id, None);
        let user = self.users.remove(&id).expect("checked above");
        for key in &user.rooms {
            self.rooms.leave(key, id);
        }
        if !to.is_empty() {
            let line = Message::new("QUIT", &[reason])
                .with_prefix(&prefix)
                .to_string();
            self.deliver(Delivery::Fanout {
                to,
                line: Line::from(line),
            });
        }
        let last = Message::new(
            "ERROR",
            &[&format!("Closing link: {} ({reason})", user.host)],
        );
        self.deliver(Delivery::Close {
            to: user.outbox,
            last: Some(Line::from(last.to_string())),
            reason: reason.to_string(),
        });
    }
    // ANCHOR_END: quit
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` with CR, LF and NUL (which a client may slip into the middle of a
/// line) as spaces: whatever is relayed stays one line.
fn clean(s: &str) -> String {
    s.replace(['\r', '\n', '\0'], " ")
}

/// A parameter that is not the last one: never empty, no spaces, no
/// leading ':' (each would change how the line is read).
fn word(s: &str) -> String {
    if s.is_empty() {
        return "*".to_string();
    }
    let mut w = s.replace(' ', "_");
    if w.starts_with(':') {
        w.replace_range(..1, "_");
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use may_patterns::ratelimit::Quota;

    use crate::outbox::{Batch, Drain};

    fn settings(max_rooms_per_client: usize, max_rooms: usize, sendq: usize) -> Arc<Settings> {
        Arc::new(Settings {
            server_name: "chat.local".into(),
            sendq,
            flood: Quota::new(10, Duration::from_secs(2), 10).unwrap(),
            flood_max_lag: Duration::from_secs(10),
            ping_interval: Duration::from_secs(90),
            registration_timeout: Duration::from_secs(90),
            history: 50,
            max_rooms_per_client,
            max_rooms,
            nick_len: 30,
            channel_len: 50,
            topic_len: 20,
        })
    }

    /// The router without its coroutine or the broadcast stage: events in,
    /// deliveries pushed into real outboxes, and what each client's writer
    /// would take out, as `(client, line)` in client order (each client's
    /// own lines in the order sent).
    struct Net {
        state: State,
        clients: Vec<Client>,
    }

    struct Client {
        n: u64,
        outbox: Outbox,
        drain: Drain,
        closed: bool,
    }

    impl Net {
        fn new() -> Net {
            Net::with(settings(3, 5, 65536))
        }

        /// `bob` is the one account.
        fn with(settings: Arc<Settings>) -> Net {
            let is_account = Box::new(|name: &str| name == "bob");
            Net {
                state: State::new(settings, is_account),
                clients: Vec::new(),
            }
        }

        fn event(&mut self, event: Event) -> Vec<(u64, String)> {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_198_400);
            let mut checks = Vec::new();
            for output in self.state.handle(event, t) {
                match output {
                    Output::Deliver(d) => deliver(d),
                    Output::CheckAuth(r) => checks.push((
                        r.id.0,
                        format!("(check {} {} {})", r.peer, r.account, r.password),
                    )),
                }
            }
            let mut lines = Vec::new();
            for c in self.clients.iter_mut().filter(|c| !c.closed) {
                let reason = c.outbox.close_reason();
                if reason.is_none() && c.outbox.queued_bytes() == 0 {
                    continue;
                }
                let (Batch::Lines(got) | Batch::Last(got)) = c.drain.next();
                c.drain.written(&got);
                lines.extend(got.iter().map(|l| (c.n, l.to_string())));
                if let Some(reason) = reason {
                    c.closed = true;
                    lines.push((c.n, format!("(close: {reason})")));
                }
            }
            lines.extend(checks);
            lines
        }

        fn connect(&mut self, n: u64) {
            let (outbox, drain) = Outbox::new(ClientId(n), 65536, || {});
            self.clients.push(Client {
                n,
                outbox: outbox.clone(),
                drain,
                closed: false,
            });
            let peer = SocketAddr::from(([127, 0, 0, 1], 50000 + n as u16));
            let out = self.event(Event::Connected {
                id: ClientId(n),
                peer,
                outbox,
                transport: Transport::Plain,
            });
            assert!(out.is_empty());
        }

        fn line(&mut self, n: u64, line: &str) -> Vec<(u64, String)> {
            let message = Message::parse(line).unwrap();
            self.event(Event::Line {
                id: ClientId(n),
                message,
            })
        }

        /// Lines client `n` gets for `line`, numerics reduced to their code.
        fn codes(&mut self, n: u64, line: &str) -> Vec<String> {
            self.line(n, line)
                .into_iter()
                .filter(|(to, _)| *to == n)
                .map(|(_, l)| l.split(' ').nth(1).unwrap_or("").to_string())
                .collect()
        }

        /// A net with client 1 connected, not registered.
        fn connected() -> Net {
            let mut net = Net::new();
            net.connect(1);
            net
        }

        /// A net with client 1 registered as `nicks[0]`, 2 as `nicks[1]`, ...
        fn registered(nicks: &[&str]) -> Net {
            let mut net = Net::new();
            for (n, nick) in (1..).zip(nicks) {
                net.register(n, nick);
            }
            net
        }

        /// For each `(line, codes)`: client `n` sends `line` and gets the
        /// numerics `codes` (space-separated), in that order.
        fn assert_codes(&mut self, n: u64, cases: &[(&str, &str)]) {
            for (line, want) in cases {
                assert_eq!(self.codes(n, line).join(" "), *want, "{line}");
            }
        }

        fn register(&mut self, n: u64, nick: &str) {
            self.connect(n);
            assert!(self.line(n, &format!("NICK {nick}")).is_empty());
            let codes = self.codes(n, &format!("USER {nick} 0 * :{nick} Real"));
            let want = [
                "001", "002", "003", "004", "005", "375", "372", "372", "376",
            ];
            assert_eq!(codes, want);
        }
    }

    /// What the broadcast stage does with a delivery, minus SQLite: a room
    /// line as it would be sent, a replay as a marker.
    fn deliver(d: Delivery) {
        match d {
            Delivery::To { to, line } => to.push(line).unwrap(),
            Delivery::Fanout { to, line } => to.iter().for_each(|o| o.push(line.clone()).unwrap()),
            Delivery::Room {
                room,
                prefix,
                command,
                text,
                to,
                ..
            } => {
                let line = Line::from(format!(":{prefix} {command} {room} :{text}"));
                to.iter().for_each(|o| o.push(line.clone()).unwrap())
            }
            Delivery::Replay { room, to, limit } => to
                .push(Line::from(format!("(replay {room} {limit})")))
                .unwrap(),
            Delivery::Close { to, last, reason } => to.close_with(last, &reason),
        }
    }

    fn to(n: u64, line: &str) -> (u64, String) {
        (n, line.to_string())
    }

    #[test]
    fn registration_sends_the_welcome_numerics() {
        let mut net = Net::connected();
        assert!(net.line(1, "NICK alice").is_empty());
        let out = net.line(1, "USER al 0 * :Alice Liddell");
        assert_eq!(
            out[0],
            to(
                1,
                ":chat.local 001 alice :Welcome to the chat.local IRC network, alice!~al@127.0.0.1"
            )
        );
        assert!(out[3]
            .1
            .starts_with(":chat.local 004 alice chat.local chat_server-"));
        assert_eq!(
            out[4].1,
            ":chat.local 005 alice CASEMAPPING=rfc1459 CHANTYPES=# CHANMODES=,,,n CHANLIMIT=#:3 \
             NICKLEN=30 CHANNELLEN=50 TOPICLEN=20 UTF8ONLY NETWORK=chat.local \
             :are supported by this server"
        );
        assert!(net.state.users[&ClientId(1)].outbox.is_registered());
        assert_eq!(net.codes(1, "USER al 0 * :again"), ["462"]);
        assert_eq!(net.codes(1, "PASS late"), ["462"]);
    }

    #[test]
    fn commands_before_registration_get_451_and_unknown_ones_421() {
        let mut net = Net::connected();
        assert_eq!(net.codes(1, "JOIN #a"), ["451"]);
        assert_eq!(net.codes(1, "FOO"), ["451"]);
        assert_eq!(
            net.line(1, "PING tok"),
            [to(1, ":chat.local PONG chat.local tok")]
        );
        assert_eq!(net.codes(1, "PING"), ["409"]);
        assert_eq!(net.codes(1, "USER x 0 *"), ["461"]);
        net.line(1, "NICK a");
        net.line(1, "USER a 0 * :A");
        assert_eq!(
            net.line(1, "FOO bar"),
            [to(1, ":chat.local 421 a FOO :Unknown command")]
        );
        assert!(net.line(1, "PONG x").is_empty());
    }

    #[test]
    fn cap_negotiation_holds_registration_until_cap_end() {
        let mut net = Net::connected();
        let ls = net.line(1, "CAP LS 302");
        assert_eq!(ls, [to(1, ":chat.local CAP * LS :server-time sasl=PLAIN")]);
        assert_eq!(
            net.line(1, "CAP LS"),
            [to(1, ":chat.local CAP * LS :server-time sasl")]
        );
        net.line(1, "NICK a");
        assert!(net.line(1, "USER a 0 * :A").is_empty(), "CAP is still open");
        let nak = net.line(1, "CAP REQ :server-time echo-message");
        assert_eq!(
            nak,
            [to(1, ":chat.local CAP a NAK :server-time echo-message")]
        );
        assert!(!net.state.users[&ClientId(1)].outbox.wants_server_time());
        let ack = net.line(1, "CAP REQ :server-time");
        assert_eq!(ack, [to(1, ":chat.local CAP a ACK server-time")]);
        assert!(net.state.users[&ClientId(1)].outbox.wants_server_time());
        assert_eq!(
            net.line(1, "CAP LIST"),
            [to(1, ":chat.local CAP a LIST server-time")]
        );
        assert_eq!(net.codes(1, "CAP FROB"), ["410"]);
        assert_eq!(net.codes(1, "CAP END")[0], "001");
    }

    #[test]
    fn two_users_join_and_talk() {
        let mut net = Net::registered(&["alice", "bob2"]);
        let join = net.line(1, "JOIN #Rust");
        assert_eq!(
            join,
            [
                to(1, ":alice!~alice@127.0.0.1 JOIN #Rust"),
                to(1, ":chat.local 353 alice = #Rust :alice"),
                to(1, ":chat.local 366 alice #Rust :End of /NAMES list"),
                to(1, "(replay #Rust 50)"),
            ]
        );
        let join = net.line(2, "JOIN #rust");
        assert_eq!(join[0], to(1, ":bob2!~bob2@127.0.0.1 JOIN #Rust"));
        assert_eq!(join[1], to(2, ":bob2!~bob2@127.0.0.1 JOIN #Rust"));
        assert_eq!(join[2], to(2, ":chat.local 353 bob2 = #Rust :alice bob2"));
        // A room line goes to the others, not back to its sender.
        let said = net.line(1, "PRIVMSG #RUST :hello there");
        assert_eq!(
            said,
            [to(2, ":alice!~alice@127.0.0.1 PRIVMSG #Rust :hello there")]
        );
        let private = net.line(2, "PRIVMSG Alice :psst");
        assert_eq!(private, [to(1, ":bob2!~bob2@127.0.0.1 PRIVMSG alice psst")]);
        let notice = net.line(2, "NOTICE #rust :note");
        assert_eq!(notice, [to(1, ":bob2!~bob2@127.0.0.1 NOTICE #Rust :note")]);
        assert_eq!(net.state.report.messages, 3);
        assert!(
            net.line(2, "JOIN #rust").is_empty(),
            "a second JOIN is a no-op"
        );
    }

    #[test]
    fn message_misuse_gets_its_numeric_but_notice_never_does() {
        let mut net = Net::registered(&["alice", "carol"]);
        net.line(2, "JOIN #b");
        net.assert_codes(
            1,
            &[
                ("PRIVMSG", "411"),
                ("PRIVMSG #b", "412"),
                ("PRIVMSG #b :", "412"),
                ("PRIVMSG nobody :hi", "401"),
                ("PRIVMSG #none :hi", "403"),
                ("PRIVMSG #b :hi", "404"),
            ],
        );
        for line in [
            "NOTICE",
            "NOTICE #b",
            "NOTICE nobody :x",
            "NOTICE #none :x",
            "NOTICE #b :x",
        ] {
            assert!(net.line(1, line).is_empty(), "{line}");
        }
        // A comma list reaches each target; bad ones are reported one by one.
        let out = net.line(2, "PRIVMSG alice,nobody :x");
        assert_eq!(out[0], to(1, ":carol!~carol@127.0.0.1 PRIVMSG alice x"));
        assert_eq!(
            out[1],
            to(2, ":chat.local 401 carol nobody :No such nick/channel")
        );
    }

    #[test]
    fn a_relayed_line_fits_in_512_bytes() {
        let mut net = Net::registered(&["alice", "carol"]);
        net.line(1, "JOIN #b");
        net.line(2, "JOIN #b");
        let text = "é".repeat(240); // 480 bytes: fits in, not with a prefix
        let out = net.line(1, &format!("PRIVMSG #b :{text}"));
        let line = &out[0].1;
        assert!(line.len() <= irc::MAX_LINE - 2, "{}", line.len());
        assert!(
            line.len() > irc::MAX_LINE - 4,
            "cut on a char boundary only"
        );
        // CR, LF or NUL inside a line cannot make a second one.
        let out = net.line(1, "PRIVMSG #b :a\rQUIT\0b");
        assert_eq!(out[0].1, ":alice!~alice@127.0.0.1 PRIVMSG #b :a QUIT b");
    }

    #[test]
    fn nick_rules_and_collisions() {
        let mut net = Net::new();
        net.register(1, "Ann[1]");
        net.connect(2);
        assert_eq!(net.codes(2, "NICK"), ["431"]);
        assert_eq!(net.codes(2, "NICK 9lives"), ["432"]);
        assert_eq!(net.codes(2, &format!("NICK {}", "a".repeat(31))), ["432"]);
        // rfc1459 casemapping: [ and { are the same letter.
        let taken = net.line(2, "NICK ann{1}");
        assert_eq!(
            taken,
            [to(
                2,
                ":chat.local 433 * ann{1} :Nickname is already in use"
            )]
        );
        // Two clients registering at once: the first NICK holds the name.
        net.line(2, "NICK dave");
        net.connect(3);
        assert_eq!(net.codes(3, "NICK Dave"), ["433"]);
        // A bad word echoed back stays one parameter.
        let bad = net.line(3, "NICK :a b");
        assert_eq!(bad, [to(3, ":chat.local 432 * a_b :Erroneous nickname")]);
    }

    #[test]
    fn a_nick_change_is_seen_once_by_everyone_sharing_a_room() {
        let mut net = Net::registered(&["alice", "carol", "erin"]);
        for room in ["#a", "#b"] {
            net.line(1, &format!("JOIN {room}"));
            net.line(2, &format!("JOIN {room}"));
        }
        let out = net.line(1, "NICK Alicia");
        assert_eq!(
            out,
            [
                to(1, ":alice!~alice@127.0.0.1 NICK Alicia"),
                to(2, ":alice!~alice@127.0.0.1 NICK Alicia"),
            ]
        );
        // The old nick is free, the new one taken.
        assert_eq!(net.codes(3, "NICK alicia"), ["433"]);
        assert!(net.line(3, "NICK alice").iter().all(|(to, _)| *to == 3));
        let names = net.line(2, "NAMES #a");
        assert_eq!(names[0].1, ":chat.local 353 carol = #a :Alicia carol");
    }

    #[test]
    fn part_topic_and_not_on_channel() {
        let mut net = Net::registered(&["alice", "carol"]);
        net.line(1, "JOIN #a");
        assert_eq!(net.codes(1, "TOPIC #a"), ["331"]);
        net.assert_codes(
            2,
            &[
                ("TOPIC #a :mine", "442"),
                ("TOPIC #zz", "403"),
                ("TOPIC", "461"),
            ],
        );
        // Longer than TOPICLEN (20 here): cut to it.
        let set = net.line(1, "TOPIC #a :a topic that is far too long");
        assert_eq!(
            set,
            [to(
                1,
                ":alice!~alice@127.0.0.1 TOPIC #a :a topic that is far "
            )]
        );
        let query = net.line(2, "TOPIC #a");
        assert_eq!(
            query,
            [
                to(2, ":chat.local 332 carol #a :a topic that is far "),
                to(2, ":chat.local 333 carol #a alice 1796198400"),
            ]
        );
        let join = net.line(2, "JOIN #a");
        assert_eq!(join[2].1, ":chat.local 332 carol #a :a topic that is far ");
        assert_eq!(net.codes(1, "PART"), ["461"]);
        assert_eq!(net.codes(1, "PART #none"), ["403"]);
        net.line(2, "PART #a");
        assert_eq!(net.codes(2, "PART #a"), ["442"]);
        let part = net.line(1, "PART #a :bye now");
        assert_eq!(part, [to(1, ":alice!~alice@127.0.0.1 PART #a :bye now")]);
        // The last member gone, the room is gone.
        assert_eq!(net.codes(1, "TOPIC #a"), ["403"]);
    }

    #[test]
    fn rooms_are_capped_per_client_and_on_the_server() {
        // 3 rooms a client, 5 on the server.
        let mut net = Net::registered(&["alice", "carol"]);
        let out = net.line(1, "JOIN #1,#2,#3,#4");
        assert_eq!(
            out.last().unwrap(),
            &to(
                1,
                ":chat.local 405 alice #4 :You have joined too many channels"
            )
        );
        net.line(2, "JOIN #4,#5");
        let full = net.line(2, "JOIN #6");
        assert_eq!(
            full,
            [to(
                2,
                ":chat.local 403 carol #6 :Too many rooms on this server"
            )]
        );
        // Joining a room that exists still works on a full server.
        assert!(net.codes(2, "JOIN #1").contains(&"353".to_string()));
        assert_eq!(net.codes(2, "JOIN bad,#a:b"), ["403", "403"]);
        // JOIN 0 leaves every room, and emptied rooms free their slots.
        let out = net.line(1, "JOIN 0");
        assert_eq!(out.iter().filter(|(n, _)| *n == 1).count(), 3);
        net.register(3, "erin");
        assert!(net.codes(3, "JOIN #6").contains(&"353".to_string()));
    }

    #[test]
    fn whois_says_who_where_and_which_rooms() {
        let mut net = Net::with(settings(20, 100, 65536));
        net.register(1, "alice");
        net.register(2, "carol");
        net.line(1, "JOIN #a,#b");
        assert_eq!(
            net.line(2, "WHOIS ALICE"),
            [
                to(
                    2,
                    ":chat.local 311 carol alice ~alice 127.0.0.1 * :alice Real"
                ),
                to(2, ":chat.local 319 carol alice :#a #b"),
                to(2, ":chat.local 312 carol alice chat.local :chat_server"),
                to(2, ":chat.local 318 carol alice :End of /WHOIS list"),
            ]
        );
        net.assert_codes(
            2,
            &[
                ("WHOIS chat.local alice", "311 319 312 318"),
                ("WHOIS carol", "311 312 318"),
                ("WHOIS nobody", "401 318"),
                ("WHOIS", "431"),
            ],
        );
        // Twenty long room names do not fit one line: each 319 stays short.
        for i in 0..20 {
            net.line(1, &format!("JOIN #{i:0>2}{}", "x".repeat(45)));
        }
        let rooms: Vec<String> = (net.line(2, "WHOIS alice").into_iter())
            .map(|(_, l)| l)
            .filter(|l| l.split(' ').nth(1) == Some("319"))
            .collect();
        assert!(rooms.len() > 1, "{rooms:?}");
        assert!(rooms.iter().all(|l| l.len() <= 400), "{rooms:?}");
        let named: usize = rooms
            .iter()
            .map(|l| l.rsplit(':').next().unwrap().split(' ').count())
            .sum();
        assert_eq!(named, 20, "{rooms:?}");
    }

    #[test]
    fn names_list_who_and_mode() {
        let mut net = Net::registered(&["alice", "carol"]);
        net.line(1, "JOIN #a,#b");
        net.line(2, "JOIN #a");
        net.line(1, "TOPIC #b :quiet");
        assert_eq!(net.codes(1, "NAMES #a,#none"), ["353", "366", "366"]);
        assert_eq!(net.codes(1, "NAMES"), ["366"]);
        let list = net.line(2, "LIST");
        assert_eq!(
            list,
            [
                to(2, ":chat.local 321 carol Channel :Users  Name"),
                to(2, ":chat.local 322 carol #a 2 :"),
                to(2, ":chat.local 322 carol #b 1 :quiet"),
                to(2, ":chat.local 323 carol :End of /LIST"),
            ]
        );
        assert_eq!(net.codes(2, "LIST #B"), ["321", "322", "323"]);
        let who = net.line(2, "WHO #a");
        assert_eq!(
            who,
            [
                to(
                    2,
                    ":chat.local 352 carol #a ~alice 127.0.0.1 chat.local alice H :0 alice Real"
                ),
                to(
                    2,
                    ":chat.local 352 carol #a ~carol 127.0.0.1 chat.local carol H :0 carol Real"
                ),
                to(2, ":chat.local 315 carol #a :End of WHO list"),
            ]
        );
        net.assert_codes(
            2,
            &[
                ("WHO alice", "352 315"),
                ("WHO nobody", "315"),
                ("MODE #a", "324"),
                ("MODE #a b", "368"),
                ("MODE #a +m", "482"),
                ("MODE carol", "221"),
                ("MODE carol +w", "501"),
                ("MODE carol +i", ""),
                ("MODE carol -i", "501"),
                ("MODE alice", "502"),
            ],
        );
    }

    #[test]
    fn long_lists_stop_at_half_the_sendq() {
        // sendq 1024: LIST and WHO replies stop before 512 bytes.
        let mut net = Net::with(settings(50, 50, 1024));
        net.register(1, "alice");
        let rooms: Vec<String> = (0..20).map(|i| format!("#room{i:02}")).collect();
        net.line(1, &format!("JOIN {}", rooms.join(",")));
        let list = net.line(1, "LIST");
        let bytes: usize = list.iter().map(|(_, l)| l.len() + 2).sum();
        assert!(list.len() < 22, "stopped early: {}", list.len());
        assert!(bytes < 1024, "{bytes}");
        assert!(list[list.len() - 2].1.contains("LIST stopped after"));
    }

    #[test]
    fn quit_and_close_free_the_nick_and_tell_the_rooms() {
        let mut net = Net::registered(&["alice", "carol"]);
        net.line(1, "JOIN #a");
        net.line(2, "JOIN #a");
        let out = net.line(1, "QUIT :gone fishing");
        assert_eq!(
            out,
            [
                to(1, "ERROR :Closing link: 127.0.0.1 (Quit: gone fishing)"),
                to(1, "(close: Quit: gone fishing)"),
                to(2, ":alice!~alice@127.0.0.1 QUIT :Quit: gone fishing"),
            ]
        );
        // The reader's Closed after a QUIT is a no-op.
        let closed = net.event(Event::Closed {
            id: ClientId(1),
            reason: "EOF".into(),
        });
        assert!(closed.is_empty());
        net.register(3, "alice");
        let out = net.event(Event::Closed {
            id: ClientId(2),
            reason: "Ping timeout".into(),
        });
        assert_eq!(
            out,
            [
                to(2, "ERROR :Closing link: 127.0.0.1 (Ping timeout)"),
                to(2, "(close: Ping timeout)"),
            ]
        );
        // Its last member gone, #a is gone.
        assert_eq!(net.codes(3, "TOPIC #a"), ["403"]);
        assert!(net.state.users.len() == 1 && net.state.nicks.len() == 1);
    }

    #[test]
    fn rejected_lines_get_417_fail_or_400() {
        let mut net = Net::new();
        net.register(1, "alice");
        let mut reject = |problem| {
            net.event(Event::Rejected {
                id: ClientId(1),
                problem,
            })
        };
        assert_eq!(
            reject(Problem::TooLong),
            [to(1, ":chat.local 417 alice :Input line was too long")]
        );
        assert_eq!(
            reject(Problem::NotUtf8),
            [to(
                1,
                ":chat.local FAIL * INVALID_UTF8 :Message rejected, your IRC software MUST use UTF-8"
            )]
        );
        assert!(reject(Problem::Malformed(irc::ParseError::Empty)).is_empty());
        assert_eq!(
            reject(Problem::Malformed(irc::ParseError::TooManyParams)),
            [to(
                1,
                ":chat.local 400 alice * :Malformed line: more than 15 parameters"
            )]
        );
    }

    fn plain(account: &str, password: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{account}\0{password}"))
    }

    fn checked(net: &mut Net, n: u64, ok: bool, why: Option<&str>) -> Vec<(u64, String)> {
        net.event(Event::AuthChecked {
            id: ClientId(n),
            account: "bob".into(),
            ok,
            why: why.map(str::to_string),
        })
    }

    #[test]
    fn sasl_plain_logs_in_before_registration() {
        let mut net = Net::connected();
        net.line(1, "CAP LS 302");
        net.line(1, "NICK bob");
        net.line(1, "USER bob 0 * :Bob");
        assert_eq!(
            net.line(1, "CAP REQ sasl"),
            [to(1, ":chat.local CAP bob ACK sasl")]
        );
        assert_eq!(net.codes(1, "AUTHENTICATE SCRAM-SHA-256"), ["908", "904"]);
        assert_eq!(net.line(1, "AUTHENTICATE PLAIN"), [to(1, "AUTHENTICATE +")]);
        let check = net.line(1, &format!("AUTHENTICATE {}", plain("bob", "pw")));
        assert_eq!(check, [to(1, "(check 127.0.0.1 bob pw)")]);
        // One check at a time; CAP END waits for it too.
        assert_eq!(net.codes(1, "AUTHENTICATE PLAIN"), ["904"]);
        assert!(net.line(1, "CAP END").is_empty());
        let out = checked(&mut net, 1, true, None);
        assert_eq!(
            out[..2],
            [
                to(
                    1,
                    ":chat.local 900 bob bob!~bob@127.0.0.1 bob :You are now logged in as bob"
                ),
                to(1, ":chat.local 903 bob :SASL authentication successful"),
            ]
        );
        // Logged in as bob, the nick bob is allowed: registration completes.
        assert_eq!(out[2].1.split(' ').nth(1), Some("001"));
        assert_eq!(net.codes(1, "AUTHENTICATE PLAIN"), ["907"]);
    }

    #[test]
    fn sasl_failures_are_904_905_906() {
        let mut net = Net::connected();
        net.line(1, "CAP LS 302");
        net.line(1, "AUTHENTICATE PLAIN");
        let failed = net.line(1, "AUTHENTICATE bm90IHBsYWlu"); // "not plain"
        assert!(failed[0]
            .1
            .starts_with(":chat.local 904 * :SASL authentication failed: "));
        net.line(1, "AUTHENTICATE PLAIN");
        assert_eq!(net.codes(1, "AUTHENTICATE *"), ["906"]);
        net.line(1, "AUTHENTICATE PLAIN");
        let chunk = "A".repeat(400);
        for _ in 0..4 {
            assert!(net.line(1, &format!("AUTHENTICATE {chunk}")).is_empty());
        }
        assert_eq!(net.codes(1, &format!("AUTHENTICATE {chunk}")), ["905"]);
        net.line(1, "AUTHENTICATE PLAIN");
        net.line(1, &format!("AUTHENTICATE {}", plain("bob", "wrong")));
        let out = checked(&mut net, 1, false, Some("3 failed attempts: wait 60s"));
        assert_eq!(
            out,
            [to(
                1,
                ":chat.local 904 * :SASL authentication failed (3 failed attempts: wait 60s)"
            )]
        );
        // CAP END in the middle of an exchange aborts it.
        net.line(1, "AUTHENTICATE PLAIN");
        assert_eq!(net.codes(1, "CAP END"), ["906"]);
    }

    #[test]
    fn an_account_nick_needs_its_login() {
        let mut net = Net::connected();
        net.line(1, "NICK Bob");
        let out = net.line(1, "USER b 0 * :B");
        assert_eq!(
            out,
            [to(
                1,
                ":chat.local 433 Bob Bob :Nickname is registered to an account: \
                 log in with SASL or PASS to use it"
            )]
        );
        // The claim is dropped: another nick completes registration.
        assert_eq!(net.codes(1, "NICK bobby")[0], "001");
        // A registered user cannot take it either.
        assert_eq!(net.codes(1, "NICK BOB"), ["433"]);
    }

    #[test]
    fn pass_is_checked_at_registration() {
        let mut net = Net::connected();
        assert_eq!(net.codes(1, "PASS"), ["461"]);
        net.line(1, "PASS s3cret");
        net.line(1, "NICK bob");
        let check = net.line(1, "USER bob 0 * :Bob");
        assert_eq!(check, [to(1, "(check 127.0.0.1 bob s3cret)")]);
        let out = checked(&mut net, 1, true, None);
        assert_eq!(out[0].1.split(' ').nth(1), Some("900"));
        assert_eq!(out[1].1.split(' ').nth(1), Some("001"));
        // WHOIS names the account a user logged in as.
        let whois = net.line(1, "WHOIS bob");
        assert!(
            whois.contains(&to(1, ":chat.local 330 bob bob bob :is logged in as")),
            "{whois:?}"
        );

        // `PASS account:password` names the account; a wrong one is 464,
        // then ERROR and the link closes.
        net.connect(2);
        net.line(2, "PASS bob:nope");
        net.line(2, "NICK guest");
        assert_eq!(
            net.line(2, "USER g 0 * :G"),
            [to(2, "(check 127.0.0.1 bob nope)")]
        );
        let out = checked(&mut net, 2, false, None);
        assert_eq!(
            out,
            [
                to(2, ":chat.local 464 guest :Password incorrect"),
                to(2, "ERROR :Closing link: 127.0.0.1 (Bad password)"),
                to(2, "(close: Bad password)"),
            ]
        );
        // A check that comes back for a client already gone is dropped.
        assert!(checked(&mut net, 2, true, None).is_empty());
    }

    #[test]
    fn the_biggest_events_fit_in_half_the_router_stack() {
        // An odd size makes may print the words this coroutine used when it
        // ends (`cargo test --example chat_server the_biggest -- --nocapture`:
        // "coroutine name = Some(\"router_stack\") ... used size = N").
        let builder = Builder::new()
            .name("router_stack".to_owned())
            .stack_size(STACK_WORDS / 2 + 1);
        let work = go!(builder, || {
            let mut net = Net::with(settings(1000, 10_000, 1 << 20));
            for n in 0..300 {
                net.register(n, &format!("user{n}"));
            }
            // A JOIN as long as a line can be: #big and ~120 more rooms.
            let mut join = "JOIN #big".to_string();
            for i in 0.. {
                let more = format!(",#{i}");
                if join.len() + more.len() > irc::MAX_LINE - 2 {
                    break;
                }
                join.push_str(&more);
            }
            let rooms = net.line(0, &join).len();
            for n in 1..300 {
                net.line(n, "JOIN #big");
            }
            let who = net.line(0, "WHO #big").len();
            let names = net.line(0, "NAMES #big").len();
            let list = net.line(1, "LIST").len();
            let quit = net.line(0, "QUIT :done").len();
            (rooms, who, names, list, quit)
        })
        .unwrap();
        let (rooms, who, names, list, quit) = work.join().unwrap();
        assert!(rooms > 100 * 4, "{rooms}");
        assert_eq!(who, 301);
        assert!(names > 5, "{names}");
        assert!(list > 100, "{list}");
        assert_eq!(quit, 299 + 2);
    }
}
