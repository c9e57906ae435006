//! Classic BPF interpreter (in progress).
