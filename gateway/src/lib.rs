//! The HTTP gateway: turns HTTP requests into messages on the bus and back. It owns no
//! database and no workflow logic. Its routes arrive with the gateway issue.
