//! Enumerated AVP values Rx exchanges, and the Rx Experimental-Result-Codes.

/// Specific-Action values (TS 29.214 §5.3.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpecificAction {
    /// CHARGING_CORRELATION_EXCHANGE (1).
    ChargingCorrelationExchange,
    /// INDICATION_OF_LOSS_OF_BEARER (2): a GBR bearer went to 0 kbit/s.
    IndicationOfLossOfBearer,
    /// INDICATION_OF_RECOVERY_OF_BEARER (3).
    IndicationOfRecoveryOfBearer,
    /// INDICATION_OF_RELEASE_OF_BEARER (4): the bearer was removed.
    IndicationOfReleaseOfBearer,
    /// IP-CAN_CHANGE (6).
    IpCanChange,
    /// INDICATION_OF_OUT_OF_CREDIT (7): the Rel8 feature (§5.4.1), negotiated with
    /// Supported-Features; not requested by default.
    IndicationOfOutOfCredit,
    /// INDICATION_OF_SUCCESSFUL_RESOURCES_ALLOCATION (8), Rel8 feature.
    IndicationOfSuccessfulResourcesAllocation,
    /// INDICATION_OF_FAILED_RESOURCES_ALLOCATION (9), Rel8 feature. A PCRF may report a
    /// bearer failure with this instead of 4 (§5.3.13 NOTE 2a).
    IndicationOfFailedResourcesAllocation,
    /// INDICATION_OF_LIMITED_PCC_DEPLOYMENT (10).
    IndicationOfLimitedPccDeployment,
    /// Any other value.
    Other(u32),
}

impl SpecificAction {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            SpecificAction::ChargingCorrelationExchange => 1,
            SpecificAction::IndicationOfLossOfBearer => 2,
            SpecificAction::IndicationOfRecoveryOfBearer => 3,
            SpecificAction::IndicationOfReleaseOfBearer => 4,
            SpecificAction::IpCanChange => 6,
            SpecificAction::IndicationOfOutOfCredit => 7,
            SpecificAction::IndicationOfSuccessfulResourcesAllocation => 8,
            SpecificAction::IndicationOfFailedResourcesAllocation => 9,
            SpecificAction::IndicationOfLimitedPccDeployment => 10,
            SpecificAction::Other(code) => code,
        }
    }

    /// From the wire value.
    pub fn from_code(code: u32) -> SpecificAction {
        match code {
            1 => SpecificAction::ChargingCorrelationExchange,
            2 => SpecificAction::IndicationOfLossOfBearer,
            3 => SpecificAction::IndicationOfRecoveryOfBearer,
            4 => SpecificAction::IndicationOfReleaseOfBearer,
            6 => SpecificAction::IpCanChange,
            7 => SpecificAction::IndicationOfOutOfCredit,
            8 => SpecificAction::IndicationOfSuccessfulResourcesAllocation,
            9 => SpecificAction::IndicationOfFailedResourcesAllocation,
            10 => SpecificAction::IndicationOfLimitedPccDeployment,
            other => SpecificAction::Other(other),
        }
    }

    /// Whether the action belongs to the Rel8 feature (TS 29.214 §5.4.1): subscribing to it
    /// needs Supported-Features in the initial AAR.
    pub fn is_rel8(self) -> bool {
        matches!(
            self,
            SpecificAction::IndicationOfOutOfCredit
                | SpecificAction::IndicationOfSuccessfulResourcesAllocation
                | SpecificAction::IndicationOfFailedResourcesAllocation
        )
    }

    /// Whether the action reports media that can no longer flow: loss (2) or release (4) of
    /// the bearer, or failed resource allocation (9).
    pub fn is_bearer_loss(self) -> bool {
        matches!(
            self,
            SpecificAction::IndicationOfLossOfBearer
                | SpecificAction::IndicationOfReleaseOfBearer
                | SpecificAction::IndicationOfFailedResourcesAllocation
        )
    }
}

/// Final-Unit-Action values (RFC 4006 §8.35), in an out-of-credit RAR's Flows (TS 29.214
/// §5.3.10): what the PCEF does to the flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FinalUnitAction {
    /// TERMINATE (0): the flows are stopped.
    Terminate,
    /// REDIRECT (1): the flows are redirected (e.g. to a top-up server).
    Redirect,
    /// RESTRICT_ACCESS (2): the flows are filtered.
    RestrictAccess,
    /// Any other value.
    Other(u32),
}

impl FinalUnitAction {
    /// From the wire value.
    pub fn from_code(code: u32) -> FinalUnitAction {
        match code {
            0 => FinalUnitAction::Terminate,
            1 => FinalUnitAction::Redirect,
            2 => FinalUnitAction::RestrictAccess,
            other => FinalUnitAction::Other(other),
        }
    }
}

/// Abort-Cause values (TS 29.214 §5.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortCause {
    /// BEARER_RELEASED (0).
    BearerReleased,
    /// INSUFFICIENT_SERVER_RESOURCES (1).
    InsufficientServerResources,
    /// INSUFFICIENT_BEARER_RESOURCES (2).
    InsufficientBearerResources,
    /// PS_TO_CS_HANDOVER (3).
    PsToCsHandover,
    /// SPONSORED_DATA_CONNECTIVITY_DISALLOWED (4).
    SponsoredDataConnectivityDisallowed,
    /// Any other value.
    Other(u32),
}

impl AbortCause {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            AbortCause::BearerReleased => 0,
            AbortCause::InsufficientServerResources => 1,
            AbortCause::InsufficientBearerResources => 2,
            AbortCause::PsToCsHandover => 3,
            AbortCause::SponsoredDataConnectivityDisallowed => 4,
            AbortCause::Other(code) => code,
        }
    }

    /// From the wire value.
    pub fn from_code(code: u32) -> AbortCause {
        match code {
            0 => AbortCause::BearerReleased,
            1 => AbortCause::InsufficientServerResources,
            2 => AbortCause::InsufficientBearerResources,
            3 => AbortCause::PsToCsHandover,
            4 => AbortCause::SponsoredDataConnectivityDisallowed,
            other => AbortCause::Other(other),
        }
    }
}

/// Termination-Cause values (RFC 6733 §8.15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TerminationCause {
    /// DIAMETER_LOGOUT (1): the user ended the session (a normal hang-up).
    Logout,
    /// DIAMETER_SERVICE_NOT_PROVIDED (2).
    ServiceNotProvided,
    /// DIAMETER_BAD_ANSWER (3).
    BadAnswer,
    /// DIAMETER_ADMINISTRATIVE (4): ended for administrative reasons (after an ASR).
    Administrative,
    /// DIAMETER_LINK_BROKEN (5).
    LinkBroken,
    /// DIAMETER_AUTH_EXPIRED (6).
    AuthExpired,
    /// DIAMETER_USER_MOVED (7).
    UserMoved,
    /// DIAMETER_SESSION_TIMEOUT (8).
    SessionTimeout,
}

impl TerminationCause {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            TerminationCause::Logout => 1,
            TerminationCause::ServiceNotProvided => 2,
            TerminationCause::BadAnswer => 3,
            TerminationCause::Administrative => 4,
            TerminationCause::LinkBroken => 5,
            TerminationCause::AuthExpired => 6,
            TerminationCause::UserMoved => 7,
            TerminationCause::SessionTimeout => 8,
        }
    }
}

/// Rx-Request-Type (TS 29.214 §5.3.31): which AAR of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AarKind {
    /// INITIAL_REQUEST (0): the AAR that opens the Rx session.
    Initial,
    /// UPDATE_REQUEST (1): a later AAR on the same Session-Id (re-INVITE, UPDATE).
    Update,
}

impl AarKind {
    /// The enumerated value on the wire.
    pub fn code(self) -> u32 {
        match self {
            AarKind::Initial => 0,
            AarKind::Update => 1,
        }
    }
}

/// Experimental-Result-Code values of Rx (TS 29.214 §5.5), vendor 10415.
pub mod experimental {
    /// 4261 REQUESTED_SERVICE_TEMPORARILY_NOT_AUTHORIZED (a transient failure).
    pub const REQUESTED_SERVICE_TEMPORARILY_NOT_AUTHORIZED: u32 = 4261;
    /// 5061 INVALID_SERVICE_INFORMATION: the service information is invalid or insufficient.
    pub const INVALID_SERVICE_INFORMATION: u32 = 5061;
    /// 5062 FILTER_RESTRICTIONS: Flow-Description AVPs break the §5.3.8 restrictions.
    pub const FILTER_RESTRICTIONS: u32 = 5062;
    /// 5063 REQUESTED_SERVICE_NOT_AUTHORIZED: against subscription or operator policy.
    pub const REQUESTED_SERVICE_NOT_AUTHORIZED: u32 = 5063;
    /// 5064 DUPLICATED_AF_SESSION: the AF session already has another Rx session.
    pub const DUPLICATED_AF_SESSION: u32 = 5064;
    /// 5065 IP-CAN_SESSION_NOT_AVAILABLE: no IP-CAN session binds to the UE address.
    pub const IP_CAN_SESSION_NOT_AVAILABLE: u32 = 5065;
    /// 5066 UNAUTHORIZED_NON_EMERGENCY_SESSION.
    pub const UNAUTHORIZED_NON_EMERGENCY_SESSION: u32 = 5066;
    /// 5067 UNAUTHORIZED_SPONSORED_DATA_CONNECTIVITY.
    pub const UNAUTHORIZED_SPONSORED_DATA_CONNECTIVITY: u32 = 5067;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_actions_round_trip() {
        for code in 0..20 {
            assert_eq!(SpecificAction::from_code(code).code(), code);
        }
        assert_eq!(SpecificAction::IndicationOfLossOfBearer.code(), 2);
        assert_eq!(SpecificAction::IndicationOfReleaseOfBearer.code(), 4);
        assert_eq!(SpecificAction::IndicationOfOutOfCredit.code(), 7);
        assert!(SpecificAction::from_code(2).is_bearer_loss());
        assert!(SpecificAction::from_code(4).is_bearer_loss());
        assert!(!SpecificAction::from_code(3).is_bearer_loss());
    }

    #[test]
    fn abort_causes_round_trip() {
        for code in 0..8 {
            assert_eq!(AbortCause::from_code(code).code(), code);
        }
        assert_eq!(
            AbortCause::from_code(2),
            AbortCause::InsufficientBearerResources
        );
    }

    #[test]
    fn codes() {
        assert_eq!(TerminationCause::Logout.code(), 1);
        assert_eq!(TerminationCause::Administrative.code(), 4);
        assert_eq!(AarKind::Initial.code(), 0);
        assert_eq!(AarKind::Update.code(), 1);
    }
}
