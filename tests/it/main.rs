//! AskPro's integration suite: one test binary (modules below), real HTTP over loopback.
