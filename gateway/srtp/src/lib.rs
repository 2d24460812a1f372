//! DTLS-SRTP handshake (rtc-dtls) and SRTP/SRTCP contexts (rtc-srtp, SDES keys), sans-IO.
