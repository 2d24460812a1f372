//! RTP/RTCP parse and write, RFC 7983 demultiplexing, stream rewriting, RFC 4733 events, sans-IO.
