//! Connection limits poem's server does not set: at most MAX_CONNECTIONS open at once (past it,
//! new ones wait in the kernel's backlog), and the first request's head must arrive within
//! HEADER_READ_TIMEOUT of the connection opening, so that a client trickling its headers
//! (slowloris) is cut off. Keep-alive connections that go quiet are closed by the server's idle
//! timeout (IDLE_TIMEOUT).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

use crate::pattern::StreamMatcher;

/// Limits on the connections of the API.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections open at once (MAX_CONNECTIONS).
    pub max_connections: usize,
    /// From opening a connection to the end of its first request's head (HEADER_READ_TIMEOUT).
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing read or written this long is closed (IDLE_TIMEOUT).
    pub idle_timeout: Duration,
}

/// An acceptor whose connections hold a slot of `max_connections` and must send their first
/// request head in time.
pub(crate) struct LimitedAcceptor<A> {
    inner: A,
    slots: Arc<Semaphore>,
    header_read_timeout: Duration,
}

impl<A> LimitedAcceptor<A> {
    pub(crate) fn new(inner: A, limits: ConnectionLimits) -> Self {
        Self {
            inner,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            header_read_timeout: limits.header_read_timeout,
        }
    }
}

/// After a failed accept (no file descriptors left, say), the server asks again at once: this
/// pause keeps it from spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

impl<A: Acceptor> Acceptor for LimitedAcceptor<A> {
    type Io = LimitedConnection<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(io::Error::other)?;
        match self.inner.accept().await {
            Ok((io, local, remote, scheme)) => {
                let io = LimitedConnection::new(io, slot, self.header_read_timeout);
                Ok((io, local, remote, scheme))
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                Err(err)
            }
        }
    }
}

/// A connection holding its slot, with a deadline on its first request head.
pub(crate) struct LimitedConnection<Io> {
    inner: Io,
    _slot: OwnedSemaphorePermit,
    /// Until the first head has ended: the deadline and the blank line that ends a head.
    first_head: Option<(Pin<Box<Sleep>>, StreamMatcher)>,
}

impl<Io> LimitedConnection<Io> {
    fn new(inner: Io, slot: OwnedSemaphorePermit, header_read_timeout: Duration) -> Self {
        let deadline = Box::pin(tokio::time::sleep(header_read_timeout));
        Self {
            inner,
            _slot: slot,
            first_head: Some((deadline, StreamMatcher::new(b"\r\n\r\n".to_vec()))),
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for LimitedConnection<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some((deadline, blank_line)) = &mut this.first_head else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let mut fresh = &buf.filled()[before..];
                while !fresh.is_empty() {
                    let (consumed, found) = blank_line.feed(fresh);
                    if found {
                        this.first_head = None;
                        break;
                    }
                    fresh = &fresh[consumed..];
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                io::Error::new(io::ErrorKind::TimedOut, "request head not received in time"),
            )),
            other => other,
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for LimitedConnection<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
