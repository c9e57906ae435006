//! tcpdump-style filter expressions compiled to classic BPF (in progress).
