//! Backends for the end-to-end tests: may_patterns' scriptable backend, in
//! this process, which can be stopped and started again on the same
//! address (a balancer's configuration names addresses, so a backend that
//! comes back must come back where it was).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use may::coroutine::JoinHandle;
use may::go;
use may::net::TcpListener;
use may_patterns::backend::{self, BackendConfig, BackendStats};
use may_patterns::shutdown::Shutdown;

/// The path every balancer under test checks: the backend answers only
/// `GET /search?q=WORD`.
pub const CHECK_PATH: &str = "/search?q=health";

/// A backend answering at once with `{"backend":"NAME",...}`.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    running: Option<(Shutdown, JoinHandle<io::Result<()>>)>,
}

impl TestBackend {
    /// Serve on a new ephemeral port of 127.0.0.1.
    pub fn start(name: &str) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut backend = TestBackend {
            name: name.to_owned(),
            addr,
            running: None,
        };
        backend.serve(listener);
        backend
    }

    fn serve(&mut self, listener: TcpListener) {
        let shutdown = Shutdown::new();
        let config = BackendConfig::new(&self.name, Duration::ZERO);
        let stats = Arc::new(BackendStats::default());
        let handle = {
            let shutdown = shutdown.clone();
            go!(move || backend::serve(listener, shutdown, config, stats))
        };
        self.running = Some((shutdown, handle));
    }

    /// Close the listening socket: connects are refused from now on.
    pub fn stop(&mut self) {
        if let Some((shutdown, handle)) = self.running.take() {
            shutdown.trigger();
            handle
                .join()
                .expect("the backend's accept loop ended")
                .expect("the backend served without an error");
        }
    }

    /// Listen on the same address again.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "{} is still running", self.name);
        let listener = TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("{} cannot listen on {} again: {e}", self.name, self.addr));
        self.serve(listener);
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some((shutdown, handle)) = self.running.take() {
            shutdown.trigger();
            let _ = handle.join();
        }
    }
}
