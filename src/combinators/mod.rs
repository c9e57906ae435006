//! Stream combinators over packet streams (in progress).
