//! The listening sockets of the server: which ones came from the socket unit, which were
//! taken back from the fd store, which were bound here, and how a reload changes the set.
//! Listeners belong to the server, never to a generation or a worker pool: pools accept on
//! duplicates of these fds, so a reload never closes a socket that stays.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

use super::supervisor::Supervisor;

/// Kernel backlog of sockets bound here: connections wait in it while a restart swaps the
/// binary, so it is sized for a burst, not for the steady state.
const BACKLOG: i32 = 1024;

/// Names of fds this server stored itself start with this prefix; every other passed fd
/// belongs to a socket unit.
const STORED_PREFIX: &str = "tcp-";

/// A socket handed over by the service manager, with its `LISTEN_FDNAMES` name.
#[derive(Debug)]
pub struct PassedListener {
    pub name: String,
    pub socket: TcpListener,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// Owned by the socket unit (`glint.socket`).
    SocketUnit,
    /// Bound by an earlier process of this service and taken back from the fd store.
    FdStore,
    /// Bound by this process.
    Bound,
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub origin: Origin,
    pub socket: TcpListener,
}

/// The name under which a listener for `addr` is kept in the fd store. systemd forbids `:`
/// in fd names.
pub fn store_name(addr: &SocketAddr) -> String {
    format!("{STORED_PREFIX}{addr}").replace(':', "_")
}

fn bind(addr: &SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&(*addr).into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn listener(name: String, origin: Origin, socket: TcpListener) -> io::Result<Listener> {
    socket.set_nonblocking(true)?;
    let addr = socket.local_addr()?;
    Ok(Listener {
        name,
        addr,
        origin,
        socket,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("passed socket {name}: {source}")]
    Passed { name: String, source: io::Error },
}

#[derive(Debug)]
pub struct ListenerSet {
    listeners: Vec<Listener>,
    socket_activated: bool,
}

/// Listeners a reload will add, bound but not yet serving, and names it will remove.
#[derive(Debug, Default)]
pub struct ListenerChange {
    pub added: Vec<Listener>,
    pub removed: Vec<String>,
}

impl ListenerSet {
    /// Takes the passed sockets; binds (or takes back from the fd store) `listen` when no
    /// socket unit passed any.
    pub fn establish(
        passed: Vec<PassedListener>,
        listen: &[SocketAddr],
        supervisor: &dyn Supervisor,
    ) -> Result<Self, ListenerError> {
        let (stored, unit): (Vec<_>, Vec<_>) = passed
            .into_iter()
            .partition(|p| p.name.starts_with(STORED_PREFIX));
        let socket_activated = !unit.is_empty();
        let mut listeners = Vec::new();
        for p in unit {
            let name = p.name.clone();
            listeners.push(
                listener(p.name, Origin::SocketUnit, p.socket)
                    .map_err(|source| ListenerError::Passed { name, source })?,
            );
        }
        let mut stored: Vec<Option<PassedListener>> = stored.into_iter().map(Some).collect();
        if !socket_activated {
            for addr in listen {
                let name = store_name(addr);
                let taken = stored
                    .iter_mut()
                    .find(|p| p.as_ref().is_some_and(|p| p.name == name))
                    .and_then(Option::take);
                let l = match taken {
                    Some(p) => listener(name.clone(), Origin::FdStore, p.socket)
                        .map_err(|source| ListenerError::Passed { name, source })?,
                    None => {
                        let socket = bind(addr).map_err(|source| ListenerError::Bind {
                            addr: *addr,
                            source,
                        })?;
                        let l = listener(name, Origin::Bound, socket).map_err(|source| {
                            ListenerError::Bind {
                                addr: *addr,
                                source,
                            }
                        })?;
                        store(&l, supervisor);
                        l
                    }
                };
                listeners.push(l);
            }
        }
        for unused in stored.into_iter().flatten() {
            tracing::info!(name = %unused.name, "dropping stored listener no longer configured");
            supervisor.remove_fd(&unused.name);
        }
        Ok(ListenerSet {
            listeners,
            socket_activated,
        })
    }

    pub fn socket_activated(&self) -> bool {
        self.socket_activated
    }

    pub fn iter(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.iter()
    }

    /// Binds what `listen` adds; nothing changes until `commit`. Dropping the change
    /// closes what it bound.
    pub fn prepare(&self, listen: &[SocketAddr]) -> Result<ListenerChange, ListenerError> {
        if self.socket_activated {
            return Ok(ListenerChange::default());
        }
        let wanted: Vec<String> = listen.iter().map(store_name).collect();
        let mut change = ListenerChange::default();
        for (addr, name) in listen.iter().zip(&wanted) {
            if self.listeners.iter().any(|l| &l.name == name) {
                continue;
            }
            let socket = bind(addr).map_err(|source| ListenerError::Bind {
                addr: *addr,
                source,
            })?;
            change.added.push(
                listener(name.clone(), Origin::Bound, socket).map_err(|source| {
                    ListenerError::Bind {
                        addr: *addr,
                        source,
                    }
                })?,
            );
        }
        change.removed = self
            .listeners
            .iter()
            .filter(|l| !wanted.contains(&l.name))
            .map(|l| l.name.clone())
            .collect();
        Ok(change)
    }

    /// Applies a prepared change: stores what was added, closes and un-stores what was
    /// removed. The caller has already stopped accepting on the removed ones.
    pub fn commit(&mut self, change: ListenerChange, supervisor: &dyn Supervisor) {
        for name in &change.removed {
            if let Some(pos) = self.listeners.iter().position(|l| &l.name == name) {
                let closed = self.listeners.remove(pos);
                tracing::info!(name = %closed.name, addr = %closed.addr, "listener closed");
                supervisor.remove_fd(&closed.name);
            }
        }
        for added in change.added {
            store(&added, supervisor);
            tracing::info!(name = %added.name, addr = %added.addr, "listener added");
            self.listeners.push(added);
        }
    }
}

fn store(listener: &Listener, supervisor: &dyn Supervisor) {
    if let Err(e) = supervisor.store_fd(&listener.name, listener.socket.as_fd()) {
        tracing::warn!(name = %listener.name, error = %e, "could not keep the listener in the fd store; a restart will rebind it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::BorrowedFd;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);
    impl Supervisor for Recorder {
        fn notify(&self, _: &[super::super::supervisor::Notice]) {}
        fn fd_store_capacity(&self) -> Option<usize> {
            None
        }
        fn store_fd(&self, name: &str, _: BorrowedFd<'_>) -> io::Result<()> {
            self.0.lock().unwrap().push(format!("store {name}"));
            Ok(())
        }
        fn remove_fd(&self, name: &str) {
            self.0.lock().unwrap().push(format!("remove {name}"));
        }
    }

    /// A configured address whose port the kernel picks at bind: no port is bound,
    /// released and bound again. Listeners are keyed by the configured address.
    fn any_port(host: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, host], 0))
    }

    #[test]
    fn store_names_have_no_colons() {
        let name = store_name(&"[::1]:9292".parse().unwrap());
        assert!(!name.contains(':'), "{name}");
        assert!(name.starts_with(STORED_PREFIX));
    }

    #[test]
    fn bound_listeners_are_stored_and_removed_ones_unstored() {
        let rec = Recorder::default();
        let first = any_port(1);
        let mut set = ListenerSet::establish(Vec::new(), &[first], &rec).unwrap();
        assert_eq!(set.iter().next().unwrap().origin, Origin::Bound);
        let second = any_port(2);
        let change = set.prepare(&[second]).unwrap();
        assert_eq!(change.added.len(), 1);
        assert_eq!(change.removed, vec![store_name(&first)]);
        set.commit(change, &rec);
        assert_eq!(set.iter().count(), 1);
        let log = rec.0.lock().unwrap().clone();
        assert_eq!(
            log,
            vec![
                format!("store {}", store_name(&first)),
                format!("remove {}", store_name(&first)),
                format!("store {}", store_name(&second)),
            ]
        );
    }

    #[test]
    fn stored_fds_are_taken_back_by_name_and_unit_sockets_win() {
        let rec = Recorder::default();
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let passed = vec![PassedListener {
            name: store_name(&addr),
            socket,
        }];
        let set = ListenerSet::establish(passed, &[addr], &rec).unwrap();
        assert_eq!(set.iter().next().unwrap().origin, Origin::FdStore);
        assert!(rec.0.lock().unwrap().is_empty());

        let unit = TcpListener::bind("127.0.0.1:0").unwrap();
        let passed = vec![PassedListener {
            name: "api".into(),
            socket: unit,
        }];
        let set = ListenerSet::establish(passed, &[addr], &rec).unwrap();
        assert!(set.socket_activated());
        assert_eq!(set.iter().count(), 1);
        assert!(set.prepare(&[any_port(3)]).unwrap().added.is_empty());
    }
}
