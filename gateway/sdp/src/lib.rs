//! SDP interworking.
