//! The subset of the 3GPP TS 32.298 charging data record types that cdrvault
//! reads.
//!
//! **Provenance.** These definitions were written for cdrvault from the type
//! names, tag numbers and field names of TS 32.298 (modules
//! `CSChargingDataTypes`, `GPRSChargingDataTypes`,
//! `GenericChargingDataTypes`; interface facts), not copied from 3GPP/ETSI
//! ASN.1 module text. The test fixture generator
//! (`tests/fixtures/gen_3gpp_ber.py`) states the same subset in ASN.1
//! notation for `asn1tools`, an independent implementation, and a unit test
//! checks every member listed here against that text.
//!
//! The modules use `IMPLICIT TAGS`: a context tag replaces the tag of the
//! type it labels, except on CHOICE types, whose tags stay explicit.
//!
//! **Records are SETs of which cdrvault reads a few members.** A derived
//! `SET` would refuse every member it does not know, and real records carry
//! dozens (trunk groups, CAMEL data, QoS, ...). So each record kind is a
//! [`RecordKind`]: its `CallEventRecord` arm and the members cdrvault reads,
//! as (tag, member name, [`Role`]). The role fixes the member's ASN.1 type
//! (see [`Role`]) and what it becomes in cdrvault's record; the decoder
//! (`super::decode_record`) walks the SET with `rasn`'s BER decoder and
//! decodes each listed member as its role's type, skipping the others. The
//! structured member types are the `rasn`-derived types below.

use rasn::prelude::*;

/// `LocationAreaAndCell ::= SEQUENCE { locationAreaCode [0] OCTET STRING (SIZE(2)),
/// cellId [1] OCTET STRING (SIZE(2)), mCC-MNC [2] OCTET STRING (SIZE(3)) OPTIONAL }`
#[derive(AsnType, Decode, Encode, Debug, Clone, PartialEq, Eq)]
pub struct LocationAreaAndCell {
    /// Location area code, 2 octets as received.
    #[rasn(tag(context, 0))]
    pub location_area_code: FixedOctetString<2>,
    /// Cell identity within the location area, 2 octets as received.
    #[rasn(tag(context, 1))]
    pub cell_id: FixedOctetString<2>,
    /// Mobile country and network code, 3 octets as received, if present.
    #[rasn(tag(context, 2))]
    pub mcc_mnc: Option<FixedOctetString<3>>,
}

/// `IPBinV6AddressWithPrefixLength ::= SEQUENCE { iPBinV6Address
/// OCTET STRING (SIZE(16)), pDPAddressPrefixLength INTEGER (1..64) DEFAULT 64 }`
#[derive(AsnType, Decode, Encode, Debug, Clone, PartialEq, Eq)]
pub struct IpBinV6WithPrefix {
    /// The IPv6 address, 16 octets in network order.
    pub address: FixedOctetString<16>,
    /// Prefix length in bits (1..64); `None` means the ASN.1 default, 64.
    pub prefix_length: Option<u8>,
}

/// `IPAddress`, flattened: `IPAddress ::= CHOICE { iPBinaryAddress
/// IPBinaryAddress, iPTextRepresentedAddress IPTextRepresentedAddress }`
/// whose untagged CHOICE arms are told apart by their own tags, so one
/// CHOICE over the leaf tags decodes the same bytes.
#[derive(AsnType, Decode, Encode, Debug, Clone, PartialEq, Eq)]
#[rasn(choice)]
pub enum IpAddress {
    /// `iPBinV4Address [0] OCTET STRING (SIZE(4))`
    #[rasn(tag(context, 0))]
    BinV4(FixedOctetString<4>),
    /// `iPBinV6Address [1] OCTET STRING (SIZE(16))`
    #[rasn(tag(context, 1))]
    BinV6(FixedOctetString<16>),
    /// `iPTextV4Address [2] IA5String`
    #[rasn(tag(context, 2))]
    TextV4(Ia5String),
    /// `iPTextV6Address [3] IA5String`
    #[rasn(tag(context, 3))]
    TextV6(Ia5String),
    /// `iPBinV6AddressWithPrefix [4] IPBinV6AddressWithPrefixLength`
    #[rasn(tag(context, 4))]
    BinV6WithPrefix(IpBinV6WithPrefix),
}

/// `PDPAddress ::= CHOICE { iPAddress [0] IPAddress, ... }` (the ETSI
/// address arm is not read).
#[derive(AsnType, Decode, Encode, Debug, Clone, PartialEq, Eq)]
#[rasn(choice)]
pub enum PdpAddress {
    /// `iPAddress [0] IPAddress`: the only arm decoded.
    #[rasn(tag(explicit(context, 0)))]
    IpAddress(IpAddress),
}

/// What a record member is to cdrvault, which also fixes its ASN.1 type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not listed: skipped (any well-formed BER value).
    Unread,
    /// A non-identifying member (record type, recording entity / node id /
    /// gateway address, call reference / charging id, sequence numbers,
    /// service centre, message reference): any well-formed BER value; its
    /// complete encoding enters the record id.
    Id,
    /// `IMSI ::= TBCD-STRING` (OCTET STRING) → imsi.
    Imsi,
    /// `IMEI ::= TBCD-STRING` (OCTET STRING) → imei.
    Imei,
    /// `AddressString` / `BCDDirectoryNumber` (OCTET STRING) → caller.
    Caller,
    /// The same types → caller when no [`Role::Caller`] member is present
    /// (an MO call's `callingNumber` behind its `servedMSISDN`).
    CallerFallback,
    /// `AddressString` / `BCDDirectoryNumber` (OCTET STRING) → callee.
    Callee,
    /// `SmsTpDestinationNumber` (OCTET STRING, a TS 23.040 TP-DA) → callee.
    SmsDestination,
    /// [`LocationAreaAndCell`] (SEQUENCE) → cell id (LAC-CI).
    Location,
    /// `LocationAreaCode` (OCTET STRING (SIZE(2))) → cell id with
    /// [`Role::CellIdentifier`] and [`Role::Plmn`].
    LocationAreaCode,
    /// `CellId` (OCTET STRING (SIZE(2))).
    CellIdentifier,
    /// `PLMN-Id` (OCTET STRING (SIZE(3))) of the serving node.
    Plmn,
    /// `userLocationInformation` (OCTET STRING, TS 29.274 ULI) → cell id
    /// (ECGI, else CGI).
    UserLocation,
    /// [`PdpAddress`] (explicitly tagged CHOICE) → ip.
    PdpAddress,
    /// `SEQUENCE OF ChangeOfCharCondition`: the uplink \[3\] and downlink \[4\]
    /// INTEGER data volumes → usage count.
    Volumes,
    /// `TimeStamp` (OCTET STRING (SIZE(9))) → start time; enters the id.
    Start,
    /// `TimeStamp` → start time when no [`Role::Start`] member is present;
    /// enters the id.
    StartFallback,
    /// `TimeStamp` → end time; enters the id.
    End,
    /// `CallDuration` (INTEGER, seconds) → duration; enters the id.
    Duration,
}

impl Role {
    /// True if the member's encoding enters the record id.
    pub const fn in_id(self) -> bool {
        matches!(
            self,
            Role::Id | Role::Start | Role::StartFallback | Role::End | Role::Duration
        )
    }
}

/// Highest member tag a [`RecordKind`] lists, plus one.
pub const MAX_MEMBER_TAG: usize = 64;

/// One `CallEventRecord` arm that cdrvault reads.
#[derive(Debug)]
pub struct RecordKind {
    /// The arm's context tag in `CallEventRecord`.
    pub arm: u32,
    /// The arm's name (`moCallRecord`); lower-cased, it is the stored
    /// `record_type`.
    pub name: &'static str,
    /// The stored `record_type`: `name` lower-cased.
    pub record_type: &'static str,
    /// The stored `service`.
    pub service: &'static str,
    /// (tag, member name, role) of every member read.
    pub members: &'static [(u32, &'static str, Role)],
    roles: [Role; MAX_MEMBER_TAG],
}

impl RecordKind {
    const fn new(
        arm: u32,
        name: &'static str,
        record_type: &'static str,
        service: &'static str,
        members: &'static [(u32, &'static str, Role)],
    ) -> RecordKind {
        let mut roles = [Role::Unread; MAX_MEMBER_TAG];
        let mut i = 0;
        while i < members.len() {
            roles[members[i].0 as usize] = members[i].2;
            i += 1;
        }
        RecordKind {
            arm,
            name,
            record_type,
            service,
            members,
            roles,
        }
    }

    /// The role of the member with context tag `tag`.
    pub fn role(&self, tag: u32) -> Role {
        self.roles
            .get(tag as usize)
            .copied()
            .unwrap_or(Role::Unread)
    }

    /// The kind of the `CallEventRecord` arm with context tag `arm`.
    pub fn by_arm(arm: u32) -> Option<&'static RecordKind> {
        KINDS.iter().find(|k| k.arm == arm)
    }
}

use Role::*;

/// `MOCallRecord ::= SET` (arm `moCallRecord [0]`).
pub const MO_CALL: &[(u32, &str, Role)] = &[
    (0, "recordType", Id),
    (1, "servedIMSI", Imsi),
    (2, "servedIMEI", Imei),
    (3, "servedMSISDN", Caller),
    (4, "callingNumber", CallerFallback),
    (5, "calledNumber", Callee),
    (9, "recordingEntity", Id),
    (12, "location", Location),
    (22, "seizureTime", StartFallback),
    (23, "answerTime", Start),
    (24, "releaseTime", End),
    (25, "callDuration", Duration),
    (32, "callReference", Id),
    (33, "sequenceNumber", Id),
];

/// `MTCallRecord ::= SET` (arm `mtCallRecord [1]`): the served MSISDN is
/// the callee.
pub const MT_CALL: &[(u32, &str, Role)] = &[
    (0, "recordType", Id),
    (1, "servedIMSI", Imsi),
    (2, "servedIMEI", Imei),
    (3, "servedMSISDN", Callee),
    (4, "callingNumber", Caller),
    (6, "recordingEntity", Id),
    (9, "location", Location),
    (19, "seizureTime", StartFallback),
    (20, "answerTime", Start),
    (21, "releaseTime", End),
    (22, "callDuration", Duration),
    (29, "callReference", Id),
    (30, "sequenceNumber", Id),
];

/// `MOSMSRecord ::= SET` (arm `moSMSRecord [6]`).
pub const MO_SMS: &[(u32, &str, Role)] = &[
    (0, "recordType", Id),
    (1, "servedIMSI", Imsi),
    (2, "servedIMEI", Imei),
    (3, "servedMSISDN", Caller),
    (5, "serviceCentre", Id),
    (6, "recordingEntity", Id),
    (7, "location", Location),
    (8, "messageReference", Id),
    (9, "originationTime", Start),
    (12, "destinationNumber", SmsDestination),
];

/// `MTSMSRecord ::= SET` (arm `mtSMSRecord [7]`): no originating number;
/// the served MSISDN is the callee.
pub const MT_SMS: &[(u32, &str, Role)] = &[
    (0, "recordType", Id),
    (1, "serviceCentre", Id),
    (2, "servedIMSI", Imsi),
    (3, "servedIMEI", Imei),
    (4, "servedMSISDN", Callee),
    (6, "recordingEntity", Id),
    (7, "location", Location),
    (8, "deliveryTime", Start),
];

/// `SGSNPDPRecord ::= SET` (arm `sgsnPDPRecord [20]`).
pub const SGSN_PDP: &[(u32, &str, Role)] = &[
    (0, "recordType", Id),
    (3, "servedIMSI", Imsi),
    (4, "servedIMEI", Imei),
    (5, "sgsnAddress", Id),
    (8, "locationAreaCode", LocationAreaCode),
    (9, "cellIdentifier", CellIdentifier),
    (10, "chargingID", Id),
    (14, "servedPDPAddress", PdpAddress),
    (15, "listOfTrafficVolumes", Volumes),
    (16, "recordOpeningTime", Start),
    (17, "duration", Duration),
    (21, "recordSequenceNumber", Id),
    (22, "nodeID", Id),
    (24, "localSequenceNumber", Id),
    (27, "servedMSISDN", Caller),
    (38, "servingNodePLMNIdentifier", Plmn),
];

/// `SGWRecord ::= SET` and `PGWRecord ::= SET` (arms `sGWRecord [78]`,
/// `pGWRecord [79]`): the two agree on every tag listed here (tag 4 is
/// `s-GWAddress` or `p-GWAddress`).
pub const GATEWAY: &[(u32, &str, Role)] = &[
    (0, "recordType", Id),
    (3, "servedIMSI", Imsi),
    (4, "s-GWAddress", Id),
    (5, "chargingID", Id),
    (9, "servedPDPPDNAddress", PdpAddress),
    (12, "listOfTrafficVolumes", Volumes),
    (13, "recordOpeningTime", StartFallback),
    (14, "duration", Duration),
    (17, "recordSequenceNumber", Id),
    (18, "nodeID", Id),
    (20, "localSequenceNumber", Id),
    (22, "servedMSISDN", Caller),
    (29, "servedIMEI", Imei),
    (32, "userLocationInformation", UserLocation),
    (38, "startTime", Start),
    (39, "stopTime", End),
];

/// Every `CallEventRecord` arm cdrvault reads. CS record arms carry the
/// tags of `CSRecord`, PS arms those of `GPRSRecord`; both number their
/// arms so that the two never collide in the arms listed here.
pub static KINDS: [RecordKind; 7] = [
    RecordKind::new(0, "moCallRecord", "mocallrecord", "voice", MO_CALL),
    RecordKind::new(1, "mtCallRecord", "mtcallrecord", "voice", MT_CALL),
    RecordKind::new(6, "moSMSRecord", "mosmsrecord", "sms", MO_SMS),
    RecordKind::new(7, "mtSMSRecord", "mtsmsrecord", "sms", MT_SMS),
    RecordKind::new(20, "sgsnPDPRecord", "sgsnpdprecord", "data", SGSN_PDP),
    RecordKind::new(78, "sGWRecord", "sgwrecord", "data", GATEWAY),
    RecordKind::new(79, "pGWRecord", "pgwrecord", "data", GATEWAY),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASN.1 the independent fixture generator compiles.
    const GENERATOR: &str = include_str!("../../../../tests/fixtures/gen_3gpp_ber.py");

    /// The `Name ::= SET { ... }` or `CHOICE { ... }` body of `name` in the
    /// generator's ASN.1.
    fn body(name: &str) -> &'static str {
        let start = GENERATOR
            .find(&format!("\n{name} ::="))
            .unwrap_or_else(|| panic!("{name} in the generator's ASN.1"));
        let rest = &GENERATOR[start..];
        let open = rest.find('{').unwrap();
        let close = rest.find("\n}").unwrap();
        &rest[open..close]
    }

    #[test]
    fn every_member_and_arm_agrees_with_the_independent_asn1() {
        let arms = body("CallEventRecord");
        for k in &KINDS {
            assert!(
                arms.lines()
                    .any(|l| l.trim().starts_with(&format!("{} ", k.name))
                        && l.contains(&format!("[{}]", k.arm))),
                "arm {} [{}]",
                k.name,
                k.arm
            );
            assert_eq!(k.record_type, k.name.to_ascii_lowercase());
            let record = {
                let mut n = k.name.to_owned();
                // moCallRecord -> MOCallRecord, sgsnPDPRecord -> SGSNPDPRecord.
                let upper = n.find(|c: char| c.is_ascii_uppercase()).unwrap();
                n.replace_range(..upper, &n[..upper].to_ascii_uppercase());
                n
            };
            let set = body(&record);
            for (tag, member, role) in k.members {
                let member = match (record.as_str(), *member) {
                    ("PGWRecord", "s-GWAddress") => "p-GWAddress",
                    (_, m) => m,
                };
                let line = set
                    .lines()
                    .find(|l| l.trim().starts_with(&format!("{member} ")))
                    .unwrap_or_else(|| panic!("{record}.{member} in the generator"));
                assert!(
                    line.contains(&format!("[{tag}]")),
                    "{record}.{member} has tag [{tag}]: {line}"
                );
                assert_eq!(k.role(*tag), *role);
            }
        }
    }
}
