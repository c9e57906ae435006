//! tokio-util codecs over packet streams and TX sinks (in progress).
