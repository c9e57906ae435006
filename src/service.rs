//! Driving a tower Service with packets (in progress).
