import ComityCore
import Foundation

/// `POST /v1/policies`: validate and apply a rule document (or only say what it would change).
public struct PolicyApplyRequest: Codable, Sendable {
    /// The document, as YAML decodes it.
    public var document: JSONValue
    /// The YAML text as written, kept with the version.
    public var source: String?
    /// Validate and report the impact; change nothing.
    public var dryRun: Bool?

    public init(document: JSONValue, source: String? = nil, dryRun: Bool? = nil) {
        self.document = document
        self.source = source
        self.dryRun = dryRun
    }
}

/// A job a rule change affects.
public struct AffectedJob: Codable, Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var project: String
    public var state: JobState
    public var host: String?
    /// The reasons that now exclude it (labels such as `RESIDENCY(ke-health)`).
    public var reasons: [String]

    public init(id: Int64, name: String, project: String, state: JobState, host: String?, reasons: [String]) {
        self.id = id
        self.name = name
        self.project = project
        self.state = state
        self.host = host
        self.reasons = reasons
    }
}

/// What a rule change does to queued and running jobs.
public struct PolicyImpact: Codable, Sendable, Hashable {
    /// Queued jobs that had an eligible host and have none now.
    public var newlyBlocked: [AffectedJob]
    /// Queued jobs that had no eligible host and have one now.
    public var unblocked: [AffectedJob]
    /// Running jobs that a data, transfer, export or federation rule now forbids where they run: stopped at once and
    /// requeued.
    public var stopped: [AffectedJob]
    /// Running guests that only the donor's policy now excludes: preempted after the grace period.
    public var preempted: [AffectedJob]
    public var graceSeconds: Int64?

    public init(newlyBlocked: [AffectedJob] = [], unblocked: [AffectedJob] = [], stopped: [AffectedJob] = [], preempted: [AffectedJob] = [], graceSeconds: Int64? = nil) {
        self.newlyBlocked = newlyBlocked
        self.unblocked = unblocked
        self.stopped = stopped
        self.preempted = preempted
        self.graceSeconds = graceSeconds
    }
}

public struct PolicyApplyResult: Codable, Sendable {
    public var kind: PolicyKind
    public var name: String
    /// The version written (or that would be written, in a dry run).
    public var version: Int
    public var effectiveFrom: Date
    public var applied: Bool
    /// The version in force before, for diffs.
    public var previous: JSONValue?
    public var document: JSONValue
    public var impact: PolicyImpact

    public init(kind: PolicyKind, name: String, version: Int, effectiveFrom: Date, applied: Bool, previous: JSONValue?, document: JSONValue, impact: PolicyImpact) {
        self.kind = kind
        self.name = name
        self.version = version
        self.effectiveFrom = effectiveFrom
        self.applied = applied
        self.previous = previous
        self.document = document
        self.impact = impact
    }
}

/// One applied version of a rule document.
public struct PolicyVersionView: Codable, Sendable, Hashable {
    public var kind: PolicyKind
    public var name: String
    public var version: Int
    public var effectiveFrom: Date
    public var appliedAt: Date
    /// Who applied it (`system` for datasets registered from a job's outputs).
    public var appliedBy: String
    public var producedByJob: Int64?
    public var reason: String?
    public var document: JSONValue
    public var source: String?

    public init(
        kind: PolicyKind, name: String, version: Int, effectiveFrom: Date, appliedAt: Date, appliedBy: String, producedByJob: Int64?,
        reason: String?, document: JSONValue, source: String?
    ) {
        self.kind = kind
        self.name = name
        self.version = version
        self.effectiveFrom = effectiveFrom
        self.appliedAt = appliedAt
        self.appliedBy = appliedBy
        self.producedByJob = producedByJob
        self.reason = reason
        self.document = document
        self.source = source
    }
}

/// One host's verdict for a job.
public struct HostVerdict: Codable, Sendable, Hashable {
    public var host: String
    public var partner: String
    public var region: String
    public var jurisdiction: String
    /// Every rule allows it and it has the resources (free now or not).
    public var eligible: Bool
    /// Every failing rule and missing resource.
    public var reasons: [Reason]
    /// The rules that admitted it.
    public var admittedBy: [Reason]

    public init(host: String, partner: String, region: String, jurisdiction: String, eligible: Bool, reasons: [Reason], admittedBy: [Reason]) {
        self.host = host
        self.partner = partner
        self.region = region
        self.jurisdiction = jurisdiction
        self.eligible = eligible
        self.reasons = reasons
        self.admittedBy = admittedBy
    }
}

/// `comity why` and `comity explain`: the decision for a job, host by host.
public struct Explanation: Codable, Sendable {
    public enum Outcome: String, Codable, Sendable {
        /// The job can never run (rejected at submission).
        case rejected
        /// Waiting: no eligible host with free capacity now.
        case pending
        /// Some eligible host has free capacity now (a what-if job would be placed).
        case placeable
        /// Placed on a host (assigned or running).
        case placed
        /// Ended.
        case finished
    }

    public var job: Int64?
    public var outcome: Outcome
    /// `0/12 hosts eligible: 8 RESIDENCY(ke-health: KE only), …`
    public var summary: String
    /// The rules in force (ActivePolicies id) at evaluation.
    public var policyVersion: String
    public var evaluatedAt: Date
    /// Host-independent reasons (these exclude every host).
    public var jobReasons: [Reason]
    public var hosts: [HostVerdict]
    /// Single changes that would make hosts eligible.
    public var waysOut: [String]
    /// For a placed job: where, the rules in force when it was placed, and why that host.
    public var placedOn: String?
    public var placedUnder: String?
    public var ranking: String?
    /// The jurisdictions the job's data may reach (`nil`: anywhere), as the database enforces them.
    public var permittedJurisdictions: [String]?
    /// Fair sharing: the partner's standing, and any reclaim under way for the job (or preemption of it).
    public var sharing: String?

    public init(
        job: Int64?, outcome: Outcome, summary: String, policyVersion: String, evaluatedAt: Date, jobReasons: [Reason], hosts: [HostVerdict],
        waysOut: [String], placedOn: String? = nil, placedUnder: String? = nil, ranking: String? = nil, permittedJurisdictions: [String]?
    ) {
        self.job = job
        self.outcome = outcome
        self.summary = summary
        self.policyVersion = policyVersion
        self.evaluatedAt = evaluatedAt
        self.jobReasons = jobReasons
        self.hosts = hosts
        self.waysOut = waysOut
        self.placedOn = placedOn
        self.placedUnder = placedUnder
        self.ranking = ranking
        self.permittedJurisdictions = permittedJurisdictions
    }
}

/// A dataset (or model) as `comity datasets` shows it.
public struct DatasetView: Codable, Sendable, Hashable {
    public var name: String
    public var version: Int
    public var steward: String
    public var dataClass: DataClass
    public var exportClass: String?
    /// `KE`, `EEA, CH`, or `anywhere`.
    public var residency: String
    public var derivedFrom: [String]
    public var producedByJob: Int64?
    public var document: JSONValue

    public init(
        name: String, version: Int, steward: String, dataClass: DataClass, exportClass: String?, residency: String, derivedFrom: [String],
        producedByJob: Int64?, document: JSONValue
    ) {
        self.name = name
        self.version = version
        self.steward = steward
        self.dataClass = dataClass
        self.exportClass = exportClass
        self.residency = residency
        self.derivedFrom = derivedFrom
        self.producedByJob = producedByJob
        self.document = document
    }
}

public struct PolicyList: Codable, Sendable {
    public var policies: [PolicyVersionView]
    public init(policies: [PolicyVersionView]) { self.policies = policies }
}

public struct DatasetList: Codable, Sendable {
    public var datasets: [DatasetView]
    public init(datasets: [DatasetView]) { self.datasets = datasets }
}

/// `GET /v1/audit/entries`: ledger entries in sequence order (`AuditEntry` carries content and hashes).
public struct AuditEntryList: Codable, Sendable {
    public var entries: [AuditEntry]
    public init(entries: [AuditEntry]) { self.entries = entries }
}

/// One link of the chain without content (what a partner may verify of entries it may not read).
public struct AuditLink: Codable, Sendable, Hashable {
    public var seq: Int64
    public var leaf: String
    public var hash: String
    public init(seq: Int64, leaf: String, hash: String) {
        self.seq = seq
        self.leaf = leaf
        self.hash = hash
    }
}

public struct AuditChain: Codable, Sendable {
    public var links: [AuditLink]
    public init(links: [AuditLink]) { self.links = links }
}

/// `GET /v1/audit/checkpoint`: the latest signed checkpoint and the key that signs them.
public struct AuditCheckpointView: Codable, Sendable {
    public var size: Int64
    /// Hex of the root (the chain hash of entry `size`).
    public var root: String
    /// The signed note (C2SP tlog-checkpoint).
    public var text: String
    /// The verifier key, `<name>+<key id>+<base64 key>`.
    public var verifierKey: String
    public init(size: Int64, root: String, text: String, verifierKey: String) {
        self.size = size
        self.root = root
        self.text = text
        self.verifierKey = verifierKey
    }
}
