//! The thin tokio I/O shell: sockets, tasks, the HTTP server, and the one clock read.
