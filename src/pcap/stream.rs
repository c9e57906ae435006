//! pcap files as Streams and Sinks (in progress).
