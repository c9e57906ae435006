//! A runtime-agnostic timer (in progress).
