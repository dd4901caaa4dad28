//! Connection limits poem's server does not set: at most MAX_CONNECTIONS open at once (past it,
//! new ones wait in the kernel's backlog), and a request head must arrive within
//! HEADER_READ_TIMEOUT, so that a client trickling its headers (slowloris) is cut off. hyper has
//! such a timeout but poem gives it no timer, so the connection keeps it: the first head is due
//! from the connection's start, every later one from its first byte after a response was
//! written. Keep-alive connections that go quiet are closed by the server's idle timeout
//! (IDLE_TIMEOUT).

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
    /// How long a request head may take (HEADER_READ_TIMEOUT): the first from the connection's
    /// start, each later one from its first byte.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with nothing read or written this long is closed (IDLE_TIMEOUT).
    pub idle_timeout: Duration,
}

/// An acceptor whose connections hold a slot of `max_connections` and must send each request
/// head in time.
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

/// A connection holding its slot, with a deadline on each request head.
pub(crate) struct LimitedConnection<Io> {
    inner: Io,
    _slot: OwnedSemaphorePermit,
    header_read_timeout: Duration,
    /// The head being read, if any.
    head: Option<HeadDeadline>,
    /// A response was written since the last head: the next bytes start a new head.
    wrote: bool,
}

/// A request head's deadline, and the end of a head (`CRLF CRLF`, or bare `LF LF`, which
/// hyper accepts too).
struct HeadDeadline {
    deadline: Pin<Box<Sleep>>,
    crlf_end: StreamMatcher,
    lf_end: StreamMatcher,
}

impl HeadDeadline {
    fn new(timeout: Duration) -> Self {
        Self {
            deadline: Box::pin(tokio::time::sleep(timeout)),
            crlf_end: StreamMatcher::new(b"\r\n\r\n".to_vec()),
            lf_end: StreamMatcher::new(b"\n\n".to_vec()),
        }
    }

    /// Follows `bytes`; true once the head has ended.
    fn ended_in(&mut self, bytes: &[u8]) -> bool {
        let (_, crlf) = self.crlf_end.feed(bytes);
        let (_, lf) = self.lf_end.feed(bytes);
        crlf || lf
    }
}

impl<Io> LimitedConnection<Io> {
    fn new(inner: Io, slot: OwnedSemaphorePermit, header_read_timeout: Duration) -> Self {
        Self {
            inner,
            _slot: slot,
            header_read_timeout,
            head: Some(HeadDeadline::new(header_read_timeout)),
            wrote: false,
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
        let fresh = &buf.filled()[before..];
        if matches!(read, Poll::Ready(Ok(()))) && !fresh.is_empty() {
            // Bytes after a response: the next request's head (a client silent while an
            // answer streams is never timed).
            if this.wrote && this.head.is_none() {
                this.head = Some(HeadDeadline::new(this.header_read_timeout));
            }
            this.wrote = false;
            if this.head.as_mut().is_some_and(|head| head.ended_in(fresh)) {
                this.head = None;
            }
            return read;
        }
        let overdue = read.is_pending()
            && (this.head.as_mut()).is_some_and(|head| head.deadline.as_mut().poll(cx).is_ready());
        if overdue {
            let late = "request head not received in time";
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, late)));
        }
        read
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for LimitedConnection<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        written
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
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote = true;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
