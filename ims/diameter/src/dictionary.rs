//! The AVP dictionary: for each known (code, vendor), its name, data type (RFC 6733 §4.2,
//! §4.3) and M-bit rule.
//!
//! Tables are static slices sorted by code, searched by binary search. A [`Dictionary`] is an
//! ordered list of such tables; the standard one holds the base protocol, the IETF AVPs Rx
//! reuses, and the Rx AVPs of 3GPP TS 29.214 §5.3. An application crate adds its own table with
//! [`Dictionary::with_table`]. The dictionary decides two things only: which AVPs are *known*
//! (an unknown AVP with M set is rejected with 5001, RFC 6733 §4.1) and which data lengths are
//! valid (5014). Unknown AVPs are otherwise carried opaquely.

use std::borrow::Cow;

use crate::avp::{Avp, AvpKey};

/// 3GPP's IANA enterprise number.
pub const VENDOR_3GPP: u32 = 10_415;
/// ETSI's IANA enterprise number.
pub const VENDOR_ETSI: u32 = 13_019;

/// AVP data formats (RFC 6733 §4.2 basic, §4.3 derived).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    /// Arbitrary bytes.
    OctetString,
    /// 32-bit signed, big-endian.
    Integer32,
    /// 64-bit signed.
    Integer64,
    /// 32-bit unsigned.
    Unsigned32,
    /// 64-bit unsigned.
    Unsigned64,
    /// IEEE 754 single.
    Float32,
    /// IEEE 754 double.
    Float64,
    /// A list of AVPs (§4.4).
    Grouped,
    /// Address family (2 bytes) then the address (§4.3.1).
    Address,
    /// NTP seconds, 4 bytes (§4.3.1).
    Time,
    /// UTF-8 text.
    Utf8String,
    /// An FQDN or realm (§4.3.1).
    DiameterIdentity,
    /// An `aaa://` URI (§4.3.1).
    DiameterUri,
    /// Integer32 with named values (§4.3.1).
    Enumerated,
    /// A packet filter rule in text (§4.3.1).
    IpFilterRule,
}

/// Why AVP data does not fit its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFault {
    /// Wrong length: 5014 DIAMETER_INVALID_AVP_LENGTH.
    Length,
    /// Right length, bad content (not UTF-8): 5004 DIAMETER_INVALID_AVP_VALUE.
    Value,
}

impl DataType {
    /// The exact data length of fixed-size types.
    pub fn fixed_len(self) -> Option<usize> {
        match self {
            DataType::Integer32
            | DataType::Unsigned32
            | DataType::Float32
            | DataType::Time
            | DataType::Enumerated => Some(4),
            DataType::Integer64 | DataType::Unsigned64 | DataType::Float64 => Some(8),
            _ => None,
        }
    }

    /// The smallest valid data length: what a zero-filled example AVP carries in Failed-AVP
    /// (RFC 6733 §7.1.5 for 5005 and 5014).
    pub fn minimum_len(self) -> usize {
        match self {
            // Family 1 (IPv4) plus four bytes is the shortest address in use.
            DataType::Address => 6,
            other => other.fixed_len().unwrap_or(0),
        }
    }

    /// The length rule in words, for error messages.
    pub fn length_rule(self) -> &'static str {
        match self {
            DataType::Address => "2 + 4 (IPv4) or 2 + 16 (IPv6) bytes",
            other => match other.fixed_len() {
                Some(4) => "4 bytes",
                Some(8) => "8 bytes",
                _ => "any length",
            },
        }
    }

    /// Checks `data` against the type. Grouped content is checked separately, member by
    /// member, by the validator.
    pub fn check(self, data: &[u8]) -> Result<(), DataFault> {
        if let Some(len) = self.fixed_len() {
            return if data.len() == len {
                Ok(())
            } else {
                Err(DataFault::Length)
            };
        }
        match self {
            DataType::Address => match data.get(..2).map(|f| u16::from_be_bytes([f[0], f[1]])) {
                None => Err(DataFault::Length),
                Some(1) if data.len() != 6 => Err(DataFault::Length),
                Some(2) if data.len() != 18 => Err(DataFault::Length),
                // Other families (E.164 and the rest of the IANA list) have other sizes.
                Some(_) => Ok(()),
            },
            DataType::Utf8String
            | DataType::DiameterIdentity
            | DataType::DiameterUri
            | DataType::IpFilterRule => match std::str::from_utf8(data) {
                Ok(_) => Ok(()),
                Err(_) => Err(DataFault::Value),
            },
            _ => Ok(()),
        }
    }
}

/// The M-bit rule of an AVP definition (the "AVP Flag rules" tables of RFC 6733 §4.5 and
/// TS 29.214 §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MBit {
    /// Must be set; [`Avp::new`] sets it.
    Must,
    /// Sender's choice; [`Avp::new`] leaves it clear.
    May,
    /// Must not be set; [`Avp::new`] leaves it clear.
    MustNot,
}

/// One AVP definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvpDef {
    /// Code and vendor.
    pub key: AvpKey,
    /// The name the specification uses.
    pub name: &'static str,
    /// Data format.
    pub data_type: DataType,
    /// M-bit rule.
    pub m_bit: MBit,
    /// Where it is defined.
    pub reference: &'static str,
}

impl AvpDef {
    /// A definition (for tables).
    pub const fn new(
        key: AvpKey,
        name: &'static str,
        data_type: DataType,
        m_bit: MBit,
        reference: &'static str,
    ) -> AvpDef {
        AvpDef {
            key,
            name,
            data_type,
            m_bit,
            reference,
        }
    }

    /// An example AVP with zero-filled data of the minimum length, for the Failed-AVP of a
    /// 5005 DIAMETER_MISSING_AVP answer (RFC 6733 §7.1.5).
    pub fn example(&self) -> Avp {
        Avp::new(self.key, vec![0; self.data_type.minimum_len()])
    }
}

/// A table given to [`Dictionary::with_table`] is not sorted by key or repeats one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dictionary table is not strictly sorted at {0:?}")]
pub struct UnsortedTable(pub AvpKey);

/// An ordered set of sorted AVP tables; later tables take precedence.
#[derive(Clone, Debug)]
pub struct Dictionary {
    tables: Cow<'static, [&'static [AvpDef]]>,
}

static STANDARD: Dictionary = Dictionary {
    tables: Cow::Borrowed(&[IETF_AVPS, TGPP_AVPS, ETSI_AVPS]),
};

impl Default for Dictionary {
    fn default() -> Self {
        Dictionary::standard().clone()
    }
}

impl Dictionary {
    /// The built-in tables: [`IETF_AVPS`], [`TGPP_AVPS`], [`ETSI_AVPS`].
    pub fn standard() -> &'static Dictionary {
        &STANDARD
    }

    /// This dictionary plus `table`, which must be strictly sorted by key (code, then vendor).
    pub fn with_table(&self, table: &'static [AvpDef]) -> Result<Dictionary, UnsortedTable> {
        if let Some(pair) = table.windows(2).find(|w| w[0].key >= w[1].key) {
            return Err(UnsortedTable(pair[1].key));
        }
        let mut tables = self.tables.to_vec();
        tables.push(table);
        Ok(Dictionary {
            tables: Cow::Owned(tables),
        })
    }

    /// The definition of `key`, if any table has one.
    pub fn lookup(&self, key: AvpKey) -> Option<&'static AvpDef> {
        self.tables.iter().rev().find_map(|table| {
            table
                .binary_search_by(|def| def.key.cmp(&key))
                .ok()
                .map(|i| &table[i])
        })
    }
}

/// The definition of `key` in the standard dictionary.
pub fn lookup(key: AvpKey) -> Option<&'static AvpDef> {
    Dictionary::standard().lookup(key)
}

/// User-Name (RFC 6733 §8.14).
pub const USER_NAME: AvpKey = AvpKey::base(1);
/// Framed-IP-Address (RFC 7155 §4.4.10.5.1).
pub const FRAMED_IP_ADDRESS: AvpKey = AvpKey::base(8);
/// Class (RFC 6733 §8.20).
pub const CLASS: AvpKey = AvpKey::base(25);
/// Session-Timeout (RFC 6733 §8.13).
pub const SESSION_TIMEOUT: AvpKey = AvpKey::base(27);
/// Proxy-State (RFC 6733 §6.7.4).
pub const PROXY_STATE: AvpKey = AvpKey::base(33);
/// Accounting-Session-Id (RFC 6733 §9.8.4).
pub const ACCOUNTING_SESSION_ID: AvpKey = AvpKey::base(44);
/// Acct-Multi-Session-Id (RFC 6733 §9.8.5).
pub const ACCT_MULTI_SESSION_ID: AvpKey = AvpKey::base(50);
/// Event-Timestamp (RFC 6733 §8.21).
pub const EVENT_TIMESTAMP: AvpKey = AvpKey::base(55);
/// Acct-Interim-Interval (RFC 6733 §9.8.2).
pub const ACCT_INTERIM_INTERVAL: AvpKey = AvpKey::base(85);
/// Framed-IPv6-Prefix (RFC 7155 §4.4.10.5.3).
pub const FRAMED_IPV6_PREFIX: AvpKey = AvpKey::base(97);
/// Host-IP-Address (RFC 6733 §5.3.5).
pub const HOST_IP_ADDRESS: AvpKey = AvpKey::base(257);
/// Auth-Application-Id (RFC 6733 §6.8).
pub const AUTH_APPLICATION_ID: AvpKey = AvpKey::base(258);
/// Acct-Application-Id (RFC 6733 §6.9).
pub const ACCT_APPLICATION_ID: AvpKey = AvpKey::base(259);
/// Vendor-Specific-Application-Id (RFC 6733 §6.11).
pub const VENDOR_SPECIFIC_APPLICATION_ID: AvpKey = AvpKey::base(260);
/// Redirect-Host-Usage (RFC 6733 §6.13).
pub const REDIRECT_HOST_USAGE: AvpKey = AvpKey::base(261);
/// Redirect-Max-Cache-Time (RFC 6733 §6.14).
pub const REDIRECT_MAX_CACHE_TIME: AvpKey = AvpKey::base(262);
/// Session-Id (RFC 6733 §8.8).
pub const SESSION_ID: AvpKey = AvpKey::base(263);
/// Origin-Host (RFC 6733 §6.3).
pub const ORIGIN_HOST: AvpKey = AvpKey::base(264);
/// Supported-Vendor-Id (RFC 6733 §5.3.6).
pub const SUPPORTED_VENDOR_ID: AvpKey = AvpKey::base(265);
/// Vendor-Id (RFC 6733 §5.3.3).
pub const VENDOR_ID: AvpKey = AvpKey::base(266);
/// Firmware-Revision (RFC 6733 §5.3.4).
pub const FIRMWARE_REVISION: AvpKey = AvpKey::base(267);
/// Result-Code (RFC 6733 §7.1).
pub const RESULT_CODE: AvpKey = AvpKey::base(268);
/// Product-Name (RFC 6733 §5.3.7).
pub const PRODUCT_NAME: AvpKey = AvpKey::base(269);
/// Session-Binding (RFC 6733 §8.17).
pub const SESSION_BINDING: AvpKey = AvpKey::base(270);
/// Session-Server-Failover (RFC 6733 §8.18).
pub const SESSION_SERVER_FAILOVER: AvpKey = AvpKey::base(271);
/// Multi-Round-Time-Out (RFC 6733 §8.19).
pub const MULTI_ROUND_TIME_OUT: AvpKey = AvpKey::base(272);
/// Disconnect-Cause (RFC 6733 §5.4.3).
pub const DISCONNECT_CAUSE: AvpKey = AvpKey::base(273);
/// Auth-Request-Type (RFC 6733 §8.7).
pub const AUTH_REQUEST_TYPE: AvpKey = AvpKey::base(274);
/// Auth-Grace-Period (RFC 6733 §8.10).
pub const AUTH_GRACE_PERIOD: AvpKey = AvpKey::base(276);
/// Auth-Session-State (RFC 6733 §8.11).
pub const AUTH_SESSION_STATE: AvpKey = AvpKey::base(277);
/// Origin-State-Id (RFC 6733 §8.16).
pub const ORIGIN_STATE_ID: AvpKey = AvpKey::base(278);
/// Failed-AVP (RFC 6733 §7.5).
pub const FAILED_AVP: AvpKey = AvpKey::base(279);
/// Proxy-Host (RFC 6733 §6.7.3).
pub const PROXY_HOST: AvpKey = AvpKey::base(280);
/// Error-Message (RFC 6733 §7.3).
pub const ERROR_MESSAGE: AvpKey = AvpKey::base(281);
/// Route-Record (RFC 6733 §6.7.1).
pub const ROUTE_RECORD: AvpKey = AvpKey::base(282);
/// Destination-Realm (RFC 6733 §6.6).
pub const DESTINATION_REALM: AvpKey = AvpKey::base(283);
/// Proxy-Info (RFC 6733 §6.7.2).
pub const PROXY_INFO: AvpKey = AvpKey::base(284);
/// Re-Auth-Request-Type (RFC 6733 §8.12).
pub const RE_AUTH_REQUEST_TYPE: AvpKey = AvpKey::base(285);
/// Accounting-Sub-Session-Id (RFC 6733 §9.8.6).
pub const ACCOUNTING_SUB_SESSION_ID: AvpKey = AvpKey::base(287);
/// Authorization-Lifetime (RFC 6733 §8.9).
pub const AUTHORIZATION_LIFETIME: AvpKey = AvpKey::base(291);
/// Redirect-Host (RFC 6733 §6.12).
pub const REDIRECT_HOST: AvpKey = AvpKey::base(292);
/// Destination-Host (RFC 6733 §6.5).
pub const DESTINATION_HOST: AvpKey = AvpKey::base(293);
/// Error-Reporting-Host (RFC 6733 §7.4).
pub const ERROR_REPORTING_HOST: AvpKey = AvpKey::base(294);
/// Termination-Cause (RFC 6733 §8.15).
pub const TERMINATION_CAUSE: AvpKey = AvpKey::base(295);
/// Origin-Realm (RFC 6733 §6.4).
pub const ORIGIN_REALM: AvpKey = AvpKey::base(296);
/// Experimental-Result (RFC 6733 §7.6).
pub const EXPERIMENTAL_RESULT: AvpKey = AvpKey::base(297);
/// Experimental-Result-Code (RFC 6733 §7.7).
pub const EXPERIMENTAL_RESULT_CODE: AvpKey = AvpKey::base(298);
/// Inband-Security-Id (RFC 6733 §6.10).
pub const INBAND_SECURITY_ID: AvpKey = AvpKey::base(299);
/// E2E-Sequence (RFC 6733 §6.15).
pub const E2E_SEQUENCE: AvpKey = AvpKey::base(300);
/// Subscription-Id (RFC 4006 §8.46).
pub const SUBSCRIPTION_ID: AvpKey = AvpKey::base(443);
/// Subscription-Id-Data (RFC 4006 §8.48).
pub const SUBSCRIPTION_ID_DATA: AvpKey = AvpKey::base(444);
/// Final-Unit-Action (RFC 4006 §8.35): in an Rx RAR's Flows, what the PCEF does at the end of
/// credit (TS 29.214 §5.3.10).
pub const FINAL_UNIT_ACTION: AvpKey = AvpKey::base(449);
/// Subscription-Id-Type (RFC 4006 §8.47).
pub const SUBSCRIPTION_ID_TYPE: AvpKey = AvpKey::base(450);
/// Accounting-Record-Type (RFC 6733 §9.8.1).
pub const ACCOUNTING_RECORD_TYPE: AvpKey = AvpKey::base(480);
/// Accounting-Realtime-Required (RFC 6733 §9.8.7).
pub const ACCOUNTING_REALTIME_REQUIRED: AvpKey = AvpKey::base(483);
/// Accounting-Record-Number (RFC 6733 §9.8.3).
pub const ACCOUNTING_RECORD_NUMBER: AvpKey = AvpKey::base(485);
/// Abort-Cause (TS 29.214 §5.3.1).
pub const ABORT_CAUSE: AvpKey = AvpKey::vendor(500, VENDOR_3GPP);
/// Access-Network-Charging-Address (TS 29.214 §5.3.2).
pub const ACCESS_NETWORK_CHARGING_ADDRESS: AvpKey = AvpKey::vendor(501, VENDOR_3GPP);
/// Access-Network-Charging-Identifier (TS 29.214 §5.3.3).
pub const ACCESS_NETWORK_CHARGING_IDENTIFIER: AvpKey = AvpKey::vendor(502, VENDOR_3GPP);
/// Access-Network-Charging-Identifier-Value (TS 29.214 §5.3.4).
pub const ACCESS_NETWORK_CHARGING_IDENTIFIER_VALUE: AvpKey = AvpKey::vendor(503, VENDOR_3GPP);
/// AF-Application-Identifier (TS 29.214 §5.3.5).
pub const AF_APPLICATION_IDENTIFIER: AvpKey = AvpKey::vendor(504, VENDOR_3GPP);
/// AF-Charging-Identifier (TS 29.214 §5.3.6).
pub const AF_CHARGING_IDENTIFIER: AvpKey = AvpKey::vendor(505, VENDOR_3GPP);
/// Flow-Description (TS 29.214 §5.3.8).
pub const FLOW_DESCRIPTION: AvpKey = AvpKey::vendor(507, VENDOR_3GPP);
/// Flow-Number (TS 29.214 §5.3.9).
pub const FLOW_NUMBER: AvpKey = AvpKey::vendor(509, VENDOR_3GPP);
/// Flows (TS 29.214 §5.3.10).
pub const FLOWS: AvpKey = AvpKey::vendor(510, VENDOR_3GPP);
/// Flow-Status (TS 29.214 §5.3.11).
pub const FLOW_STATUS: AvpKey = AvpKey::vendor(511, VENDOR_3GPP);
/// Flow-Usage (TS 29.214 §5.3.12).
pub const FLOW_USAGE: AvpKey = AvpKey::vendor(512, VENDOR_3GPP);
/// Specific-Action (TS 29.214 §5.3.13).
pub const SPECIFIC_ACTION: AvpKey = AvpKey::vendor(513, VENDOR_3GPP);
/// Max-Requested-Bandwidth-DL (TS 29.214 §5.3.14).
pub const MAX_REQUESTED_BANDWIDTH_DL: AvpKey = AvpKey::vendor(515, VENDOR_3GPP);
/// Max-Requested-Bandwidth-UL (TS 29.214 §5.3.15).
pub const MAX_REQUESTED_BANDWIDTH_UL: AvpKey = AvpKey::vendor(516, VENDOR_3GPP);
/// Media-Component-Description (TS 29.214 §5.3.16).
pub const MEDIA_COMPONENT_DESCRIPTION: AvpKey = AvpKey::vendor(517, VENDOR_3GPP);
/// Media-Component-Number (TS 29.214 §5.3.17).
pub const MEDIA_COMPONENT_NUMBER: AvpKey = AvpKey::vendor(518, VENDOR_3GPP);
/// Media-Sub-Component (TS 29.214 §5.3.18).
pub const MEDIA_SUB_COMPONENT: AvpKey = AvpKey::vendor(519, VENDOR_3GPP);
/// Media-Type (TS 29.214 §5.3.19).
pub const MEDIA_TYPE: AvpKey = AvpKey::vendor(520, VENDOR_3GPP);
/// RR-Bandwidth (TS 29.214 §5.3.20).
pub const RR_BANDWIDTH: AvpKey = AvpKey::vendor(521, VENDOR_3GPP);
/// RS-Bandwidth (TS 29.214 §5.3.21).
pub const RS_BANDWIDTH: AvpKey = AvpKey::vendor(522, VENDOR_3GPP);
/// SIP-Forking-Indication (TS 29.214 §5.3.22).
pub const SIP_FORKING_INDICATION: AvpKey = AvpKey::vendor(523, VENDOR_3GPP);
/// Codec-Data (TS 29.214 §5.3.7).
pub const CODEC_DATA: AvpKey = AvpKey::vendor(524, VENDOR_3GPP);
/// Service-URN (TS 29.214 §5.3.23).
pub const SERVICE_URN: AvpKey = AvpKey::vendor(525, VENDOR_3GPP);
/// Acceptable-Service-Info (TS 29.214 §5.3.24).
pub const ACCEPTABLE_SERVICE_INFO: AvpKey = AvpKey::vendor(526, VENDOR_3GPP);
/// Service-Info-Status (TS 29.214 §5.3.25).
pub const SERVICE_INFO_STATUS: AvpKey = AvpKey::vendor(527, VENDOR_3GPP);
/// MPS-Identifier (TS 29.214 §5.3.30).
pub const MPS_IDENTIFIER: AvpKey = AvpKey::vendor(528, VENDOR_3GPP);
/// AF-Signalling-Protocol (TS 29.214 §5.3.26).
pub const AF_SIGNALLING_PROTOCOL: AvpKey = AvpKey::vendor(529, VENDOR_3GPP);
/// Sponsored-Connectivity-Data (TS 29.214 §5.3.27).
pub const SPONSORED_CONNECTIVITY_DATA: AvpKey = AvpKey::vendor(530, VENDOR_3GPP);
/// Sponsor-Identity (TS 29.214 §5.3.28).
pub const SPONSOR_IDENTITY: AvpKey = AvpKey::vendor(531, VENDOR_3GPP);
/// Application-Service-Provider-Identity (TS 29.214 §5.3.29).
pub const APPLICATION_SERVICE_PROVIDER_IDENTITY: AvpKey = AvpKey::vendor(532, VENDOR_3GPP);
/// Rx-Request-Type (TS 29.214 §5.3.31).
pub const RX_REQUEST_TYPE: AvpKey = AvpKey::vendor(533, VENDOR_3GPP);
/// Min-Requested-Bandwidth-DL (TS 29.214 §5.3.32).
pub const MIN_REQUESTED_BANDWIDTH_DL: AvpKey = AvpKey::vendor(534, VENDOR_3GPP);
/// Min-Requested-Bandwidth-UL (TS 29.214 §5.3.33).
pub const MIN_REQUESTED_BANDWIDTH_UL: AvpKey = AvpKey::vendor(535, VENDOR_3GPP);
/// Required-Access-Info (TS 29.214 §5.3.34).
pub const REQUIRED_ACCESS_INFO: AvpKey = AvpKey::vendor(536, VENDOR_3GPP);
/// IP-Domain-Id (TS 29.214 §5.3.35).
pub const IP_DOMAIN_ID: AvpKey = AvpKey::vendor(537, VENDOR_3GPP);
/// GCS-Identifier (TS 29.214 §5.3.36).
pub const GCS_IDENTIFIER: AvpKey = AvpKey::vendor(538, VENDOR_3GPP);
/// Supported-Features (TS 29.229 §6.3.29).
pub const SUPPORTED_FEATURES: AvpKey = AvpKey::vendor(628, VENDOR_3GPP);
/// Feature-List-ID (TS 29.229 §6.3.30).
pub const FEATURE_LIST_ID: AvpKey = AvpKey::vendor(629, VENDOR_3GPP);
/// Feature-List (TS 29.229 §6.3.31).
pub const FEATURE_LIST: AvpKey = AvpKey::vendor(630, VENDOR_3GPP);
/// Reservation-Priority (ETSI TS 183 017 §7.3.9).
pub const RESERVATION_PRIORITY: AvpKey = AvpKey::vendor(458, VENDOR_ETSI);
/// IETF AVPs: the base protocol (RFC 6733), NASREQ (RFC 7155) and credit control (RFC 4006) ones Rx reuses; sorted by code.
#[rustfmt::skip]
pub static IETF_AVPS: &[AvpDef] = &[
    AvpDef::new(USER_NAME, "User-Name", DataType::Utf8String, MBit::Must, "RFC 6733 §8.14"),
    AvpDef::new(FRAMED_IP_ADDRESS, "Framed-IP-Address", DataType::OctetString, MBit::Must, "RFC 7155 §4.4.10.5.1"),
    AvpDef::new(CLASS, "Class", DataType::OctetString, MBit::Must, "RFC 6733 §8.20"),
    AvpDef::new(SESSION_TIMEOUT, "Session-Timeout", DataType::Unsigned32, MBit::Must, "RFC 6733 §8.13"),
    AvpDef::new(PROXY_STATE, "Proxy-State", DataType::OctetString, MBit::Must, "RFC 6733 §6.7.4"),
    AvpDef::new(ACCOUNTING_SESSION_ID, "Accounting-Session-Id", DataType::OctetString, MBit::Must, "RFC 6733 §9.8.4"),
    AvpDef::new(ACCT_MULTI_SESSION_ID, "Acct-Multi-Session-Id", DataType::Utf8String, MBit::Must, "RFC 6733 §9.8.5"),
    AvpDef::new(EVENT_TIMESTAMP, "Event-Timestamp", DataType::Time, MBit::Must, "RFC 6733 §8.21"),
    AvpDef::new(ACCT_INTERIM_INTERVAL, "Acct-Interim-Interval", DataType::Unsigned32, MBit::Must, "RFC 6733 §9.8.2"),
    AvpDef::new(FRAMED_IPV6_PREFIX, "Framed-IPv6-Prefix", DataType::OctetString, MBit::Must, "RFC 7155 §4.4.10.5.3"),
    AvpDef::new(HOST_IP_ADDRESS, "Host-IP-Address", DataType::Address, MBit::Must, "RFC 6733 §5.3.5"),
    AvpDef::new(AUTH_APPLICATION_ID, "Auth-Application-Id", DataType::Unsigned32, MBit::Must, "RFC 6733 §6.8"),
    AvpDef::new(ACCT_APPLICATION_ID, "Acct-Application-Id", DataType::Unsigned32, MBit::Must, "RFC 6733 §6.9"),
    AvpDef::new(VENDOR_SPECIFIC_APPLICATION_ID, "Vendor-Specific-Application-Id", DataType::Grouped, MBit::Must, "RFC 6733 §6.11"),
    AvpDef::new(REDIRECT_HOST_USAGE, "Redirect-Host-Usage", DataType::Enumerated, MBit::Must, "RFC 6733 §6.13"),
    AvpDef::new(REDIRECT_MAX_CACHE_TIME, "Redirect-Max-Cache-Time", DataType::Unsigned32, MBit::Must, "RFC 6733 §6.14"),
    AvpDef::new(SESSION_ID, "Session-Id", DataType::Utf8String, MBit::Must, "RFC 6733 §8.8"),
    AvpDef::new(ORIGIN_HOST, "Origin-Host", DataType::DiameterIdentity, MBit::Must, "RFC 6733 §6.3"),
    AvpDef::new(SUPPORTED_VENDOR_ID, "Supported-Vendor-Id", DataType::Unsigned32, MBit::Must, "RFC 6733 §5.3.6"),
    AvpDef::new(VENDOR_ID, "Vendor-Id", DataType::Unsigned32, MBit::Must, "RFC 6733 §5.3.3"),
    AvpDef::new(FIRMWARE_REVISION, "Firmware-Revision", DataType::Unsigned32, MBit::MustNot, "RFC 6733 §5.3.4"),
    AvpDef::new(RESULT_CODE, "Result-Code", DataType::Unsigned32, MBit::Must, "RFC 6733 §7.1"),
    AvpDef::new(PRODUCT_NAME, "Product-Name", DataType::Utf8String, MBit::MustNot, "RFC 6733 §5.3.7"),
    AvpDef::new(SESSION_BINDING, "Session-Binding", DataType::Unsigned32, MBit::Must, "RFC 6733 §8.17"),
    AvpDef::new(SESSION_SERVER_FAILOVER, "Session-Server-Failover", DataType::Enumerated, MBit::Must, "RFC 6733 §8.18"),
    AvpDef::new(MULTI_ROUND_TIME_OUT, "Multi-Round-Time-Out", DataType::Unsigned32, MBit::Must, "RFC 6733 §8.19"),
    AvpDef::new(DISCONNECT_CAUSE, "Disconnect-Cause", DataType::Enumerated, MBit::Must, "RFC 6733 §5.4.3"),
    AvpDef::new(AUTH_REQUEST_TYPE, "Auth-Request-Type", DataType::Enumerated, MBit::Must, "RFC 6733 §8.7"),
    AvpDef::new(AUTH_GRACE_PERIOD, "Auth-Grace-Period", DataType::Unsigned32, MBit::Must, "RFC 6733 §8.10"),
    AvpDef::new(AUTH_SESSION_STATE, "Auth-Session-State", DataType::Enumerated, MBit::Must, "RFC 6733 §8.11"),
    AvpDef::new(ORIGIN_STATE_ID, "Origin-State-Id", DataType::Unsigned32, MBit::Must, "RFC 6733 §8.16"),
    AvpDef::new(FAILED_AVP, "Failed-AVP", DataType::Grouped, MBit::Must, "RFC 6733 §7.5"),
    AvpDef::new(PROXY_HOST, "Proxy-Host", DataType::DiameterIdentity, MBit::Must, "RFC 6733 §6.7.3"),
    AvpDef::new(ERROR_MESSAGE, "Error-Message", DataType::Utf8String, MBit::MustNot, "RFC 6733 §7.3"),
    AvpDef::new(ROUTE_RECORD, "Route-Record", DataType::DiameterIdentity, MBit::Must, "RFC 6733 §6.7.1"),
    AvpDef::new(DESTINATION_REALM, "Destination-Realm", DataType::DiameterIdentity, MBit::Must, "RFC 6733 §6.6"),
    AvpDef::new(PROXY_INFO, "Proxy-Info", DataType::Grouped, MBit::Must, "RFC 6733 §6.7.2"),
    AvpDef::new(RE_AUTH_REQUEST_TYPE, "Re-Auth-Request-Type", DataType::Enumerated, MBit::Must, "RFC 6733 §8.12"),
    AvpDef::new(ACCOUNTING_SUB_SESSION_ID, "Accounting-Sub-Session-Id", DataType::Unsigned64, MBit::Must, "RFC 6733 §9.8.6"),
    AvpDef::new(AUTHORIZATION_LIFETIME, "Authorization-Lifetime", DataType::Unsigned32, MBit::Must, "RFC 6733 §8.9"),
    AvpDef::new(REDIRECT_HOST, "Redirect-Host", DataType::DiameterUri, MBit::Must, "RFC 6733 §6.12"),
    AvpDef::new(DESTINATION_HOST, "Destination-Host", DataType::DiameterIdentity, MBit::Must, "RFC 6733 §6.5"),
    AvpDef::new(ERROR_REPORTING_HOST, "Error-Reporting-Host", DataType::DiameterIdentity, MBit::MustNot, "RFC 6733 §7.4"),
    AvpDef::new(TERMINATION_CAUSE, "Termination-Cause", DataType::Enumerated, MBit::Must, "RFC 6733 §8.15"),
    AvpDef::new(ORIGIN_REALM, "Origin-Realm", DataType::DiameterIdentity, MBit::Must, "RFC 6733 §6.4"),
    AvpDef::new(EXPERIMENTAL_RESULT, "Experimental-Result", DataType::Grouped, MBit::Must, "RFC 6733 §7.6"),
    AvpDef::new(EXPERIMENTAL_RESULT_CODE, "Experimental-Result-Code", DataType::Unsigned32, MBit::Must, "RFC 6733 §7.7"),
    AvpDef::new(INBAND_SECURITY_ID, "Inband-Security-Id", DataType::Unsigned32, MBit::Must, "RFC 6733 §6.10"),
    AvpDef::new(E2E_SEQUENCE, "E2E-Sequence", DataType::Grouped, MBit::Must, "RFC 6733 §6.15"),
    AvpDef::new(SUBSCRIPTION_ID, "Subscription-Id", DataType::Grouped, MBit::Must, "RFC 4006 §8.46"),
    AvpDef::new(SUBSCRIPTION_ID_DATA, "Subscription-Id-Data", DataType::Utf8String, MBit::Must, "RFC 4006 §8.48"),
    AvpDef::new(FINAL_UNIT_ACTION, "Final-Unit-Action", DataType::Enumerated, MBit::Must, "RFC 4006 §8.35"),
    AvpDef::new(SUBSCRIPTION_ID_TYPE, "Subscription-Id-Type", DataType::Enumerated, MBit::Must, "RFC 4006 §8.47"),
    AvpDef::new(ACCOUNTING_RECORD_TYPE, "Accounting-Record-Type", DataType::Enumerated, MBit::Must, "RFC 6733 §9.8.1"),
    AvpDef::new(ACCOUNTING_REALTIME_REQUIRED, "Accounting-Realtime-Required", DataType::Enumerated, MBit::Must, "RFC 6733 §9.8.7"),
    AvpDef::new(ACCOUNTING_RECORD_NUMBER, "Accounting-Record-Number", DataType::Unsigned32, MBit::Must, "RFC 6733 §9.8.3"),
];
/// 3GPP AVPs (vendor 10415) of Rx (TS 29.214 §5.3 table 5.3.1) and Supported-Features (TS 29.229); sorted by code.
#[rustfmt::skip]
pub static TGPP_AVPS: &[AvpDef] = &[
    AvpDef::new(ABORT_CAUSE, "Abort-Cause", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.1"),
    AvpDef::new(ACCESS_NETWORK_CHARGING_ADDRESS, "Access-Network-Charging-Address", DataType::Address, MBit::Must, "TS 29.214 §5.3.2"),
    AvpDef::new(ACCESS_NETWORK_CHARGING_IDENTIFIER, "Access-Network-Charging-Identifier", DataType::Grouped, MBit::Must, "TS 29.214 §5.3.3"),
    AvpDef::new(ACCESS_NETWORK_CHARGING_IDENTIFIER_VALUE, "Access-Network-Charging-Identifier-Value", DataType::OctetString, MBit::Must, "TS 29.214 §5.3.4"),
    AvpDef::new(AF_APPLICATION_IDENTIFIER, "AF-Application-Identifier", DataType::OctetString, MBit::Must, "TS 29.214 §5.3.5"),
    AvpDef::new(AF_CHARGING_IDENTIFIER, "AF-Charging-Identifier", DataType::OctetString, MBit::Must, "TS 29.214 §5.3.6"),
    AvpDef::new(FLOW_DESCRIPTION, "Flow-Description", DataType::IpFilterRule, MBit::Must, "TS 29.214 §5.3.8"),
    AvpDef::new(FLOW_NUMBER, "Flow-Number", DataType::Unsigned32, MBit::Must, "TS 29.214 §5.3.9"),
    AvpDef::new(FLOWS, "Flows", DataType::Grouped, MBit::Must, "TS 29.214 §5.3.10"),
    AvpDef::new(FLOW_STATUS, "Flow-Status", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.11"),
    AvpDef::new(FLOW_USAGE, "Flow-Usage", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.12"),
    AvpDef::new(SPECIFIC_ACTION, "Specific-Action", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.13"),
    AvpDef::new(MAX_REQUESTED_BANDWIDTH_DL, "Max-Requested-Bandwidth-DL", DataType::Unsigned32, MBit::Must, "TS 29.214 §5.3.14"),
    AvpDef::new(MAX_REQUESTED_BANDWIDTH_UL, "Max-Requested-Bandwidth-UL", DataType::Unsigned32, MBit::Must, "TS 29.214 §5.3.15"),
    AvpDef::new(MEDIA_COMPONENT_DESCRIPTION, "Media-Component-Description", DataType::Grouped, MBit::Must, "TS 29.214 §5.3.16"),
    AvpDef::new(MEDIA_COMPONENT_NUMBER, "Media-Component-Number", DataType::Unsigned32, MBit::Must, "TS 29.214 §5.3.17"),
    AvpDef::new(MEDIA_SUB_COMPONENT, "Media-Sub-Component", DataType::Grouped, MBit::Must, "TS 29.214 §5.3.18"),
    AvpDef::new(MEDIA_TYPE, "Media-Type", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.19"),
    AvpDef::new(RR_BANDWIDTH, "RR-Bandwidth", DataType::Unsigned32, MBit::Must, "TS 29.214 §5.3.20"),
    AvpDef::new(RS_BANDWIDTH, "RS-Bandwidth", DataType::Unsigned32, MBit::Must, "TS 29.214 §5.3.21"),
    AvpDef::new(SIP_FORKING_INDICATION, "SIP-Forking-Indication", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.22"),
    AvpDef::new(CODEC_DATA, "Codec-Data", DataType::OctetString, MBit::Must, "TS 29.214 §5.3.7"),
    AvpDef::new(SERVICE_URN, "Service-URN", DataType::OctetString, MBit::Must, "TS 29.214 §5.3.23"),
    AvpDef::new(ACCEPTABLE_SERVICE_INFO, "Acceptable-Service-Info", DataType::Grouped, MBit::Must, "TS 29.214 §5.3.24"),
    AvpDef::new(SERVICE_INFO_STATUS, "Service-Info-Status", DataType::Enumerated, MBit::Must, "TS 29.214 §5.3.25"),
    AvpDef::new(MPS_IDENTIFIER, "MPS-Identifier", DataType::OctetString, MBit::MustNot, "TS 29.214 §5.3.30"),
    AvpDef::new(AF_SIGNALLING_PROTOCOL, "AF-Signalling-Protocol", DataType::Enumerated, MBit::MustNot, "TS 29.214 §5.3.26"),
    AvpDef::new(SPONSORED_CONNECTIVITY_DATA, "Sponsored-Connectivity-Data", DataType::Grouped, MBit::MustNot, "TS 29.214 §5.3.27"),
    AvpDef::new(SPONSOR_IDENTITY, "Sponsor-Identity", DataType::Utf8String, MBit::MustNot, "TS 29.214 §5.3.28"),
    AvpDef::new(APPLICATION_SERVICE_PROVIDER_IDENTITY, "Application-Service-Provider-Identity", DataType::Utf8String, MBit::MustNot, "TS 29.214 §5.3.29"),
    AvpDef::new(RX_REQUEST_TYPE, "Rx-Request-Type", DataType::Enumerated, MBit::MustNot, "TS 29.214 §5.3.31"),
    AvpDef::new(MIN_REQUESTED_BANDWIDTH_DL, "Min-Requested-Bandwidth-DL", DataType::Unsigned32, MBit::MustNot, "TS 29.214 §5.3.32"),
    AvpDef::new(MIN_REQUESTED_BANDWIDTH_UL, "Min-Requested-Bandwidth-UL", DataType::Unsigned32, MBit::MustNot, "TS 29.214 §5.3.33"),
    AvpDef::new(REQUIRED_ACCESS_INFO, "Required-Access-Info", DataType::Enumerated, MBit::MustNot, "TS 29.214 §5.3.34"),
    AvpDef::new(IP_DOMAIN_ID, "IP-Domain-Id", DataType::OctetString, MBit::MustNot, "TS 29.214 §5.3.35"),
    AvpDef::new(GCS_IDENTIFIER, "GCS-Identifier", DataType::OctetString, MBit::MustNot, "TS 29.214 §5.3.36"),
    AvpDef::new(SUPPORTED_FEATURES, "Supported-Features", DataType::Grouped, MBit::May, "TS 29.229 §6.3.29"),
    AvpDef::new(FEATURE_LIST_ID, "Feature-List-ID", DataType::Unsigned32, MBit::May, "TS 29.229 §6.3.30"),
    AvpDef::new(FEATURE_LIST, "Feature-List", DataType::Unsigned32, MBit::May, "TS 29.229 §6.3.31"),
];
/// ETSI AVPs (vendor 13019) reused by Rx (TS 29.214 §5.3 table 5.3.2); sorted by code.
#[rustfmt::skip]
pub static ETSI_AVPS: &[AvpDef] = &[
    AvpDef::new(RESERVATION_PRIORITY, "Reservation-Priority", DataType::Enumerated, MBit::May, "ETSI TS 183 017 §7.3.9"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_strictly_sorted() {
        for table in [IETF_AVPS, TGPP_AVPS, ETSI_AVPS] {
            for pair in table.windows(2) {
                assert!(
                    pair[0].key < pair[1].key,
                    "{:?} before {:?}",
                    pair[0].key,
                    pair[1].key
                );
            }
        }
    }

    #[test]
    fn every_entry_is_found_by_its_key() {
        for table in [IETF_AVPS, TGPP_AVPS, ETSI_AVPS] {
            for def in table {
                assert_eq!(lookup(def.key).map(|d| d.name), Some(def.name));
            }
        }
        assert_eq!(lookup(AvpKey::base(505)), None, "505 is 3GPP-only");
        assert_eq!(lookup(AvpKey::vendor(263, VENDOR_3GPP)), None);
    }

    #[test]
    fn rx_definitions_match_ts_29_214() {
        let check = |key, name, ty, m| {
            let def = lookup(key).unwrap();
            assert_eq!((def.name, def.data_type, def.m_bit), (name, ty, m));
        };
        check(
            AF_CHARGING_IDENTIFIER,
            "AF-Charging-Identifier",
            DataType::OctetString,
            MBit::Must,
        );
        check(
            FLOW_DESCRIPTION,
            "Flow-Description",
            DataType::IpFilterRule,
            MBit::Must,
        );
        check(
            MEDIA_COMPONENT_DESCRIPTION,
            "Media-Component-Description",
            DataType::Grouped,
            MBit::Must,
        );
        check(CODEC_DATA, "Codec-Data", DataType::OctetString, MBit::Must);
        check(
            RX_REQUEST_TYPE,
            "Rx-Request-Type",
            DataType::Enumerated,
            MBit::MustNot,
        );
        check(
            RESERVATION_PRIORITY,
            "Reservation-Priority",
            DataType::Enumerated,
            MBit::May,
        );
        check(
            PRODUCT_NAME,
            "Product-Name",
            DataType::Utf8String,
            MBit::MustNot,
        );
        assert_eq!(MEDIA_TYPE, AvpKey::vendor(520, 10_415));
        assert_eq!(RESERVATION_PRIORITY, AvpKey::vendor(458, 13_019));
    }

    #[test]
    fn extension_tables_are_checked_and_take_precedence() {
        static EXTRA: &[AvpDef] = &[
            AvpDef::new(
                AvpKey::vendor(1, 99),
                "Extra-One",
                DataType::Unsigned32,
                MBit::Must,
                "test",
            ),
            AvpDef::new(
                AvpKey::vendor(263, 99),
                "Extra-Two",
                DataType::Grouped,
                MBit::May,
                "test",
            ),
        ];
        static UNSORTED: &[AvpDef] = &[
            AvpDef::new(
                AvpKey::vendor(5, 99),
                "B",
                DataType::Unsigned32,
                MBit::Must,
                "test",
            ),
            AvpDef::new(
                AvpKey::vendor(4, 99),
                "A",
                DataType::Unsigned32,
                MBit::Must,
                "test",
            ),
        ];
        let d = Dictionary::standard().with_table(EXTRA).unwrap();
        assert_eq!(
            d.lookup(AvpKey::vendor(263, 99)).map(|d| d.name),
            Some("Extra-Two")
        );
        assert_eq!(d.lookup(SESSION_ID).map(|d| d.name), Some("Session-Id"));
        assert_eq!(
            Dictionary::standard().with_table(UNSORTED).unwrap_err(),
            UnsortedTable(AvpKey::vendor(4, 99))
        );
    }

    #[test]
    fn data_checks() {
        assert_eq!(DataType::Unsigned32.check(&[0; 4]), Ok(()));
        assert_eq!(DataType::Unsigned32.check(&[0; 3]), Err(DataFault::Length));
        assert_eq!(DataType::Time.check(&[0; 8]), Err(DataFault::Length));
        assert_eq!(DataType::Unsigned64.check(&[0; 8]), Ok(()));
        assert_eq!(DataType::Address.check(&[0, 1, 1, 2, 3, 4]), Ok(()));
        assert_eq!(
            DataType::Address.check(&[0, 1, 1, 2, 3]),
            Err(DataFault::Length)
        );
        assert_eq!(
            DataType::Address.check(&[0, 2, 1, 2, 3, 4]),
            Err(DataFault::Length)
        );
        assert_eq!(DataType::Address.check(&[0]), Err(DataFault::Length));
        assert_eq!(
            DataType::Utf8String.check(&[0xc3, 0x28]),
            Err(DataFault::Value)
        );
        assert_eq!(DataType::OctetString.check(&[0xc3, 0x28]), Ok(()));
        assert_eq!(DataType::Address.minimum_len(), 6);
        assert_eq!(lookup(DISCONNECT_CAUSE).unwrap().example().data, [0; 4]);
    }
}
