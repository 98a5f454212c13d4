import Foundation

/// The kinds of rule document, each written by one party (see `docs/sovereignty.md`).
public enum PolicyKind: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    /// A named set of jurisdictions (an adequacy list, a trade bloc); federation admins.
    case jurisdictionSet = "jurisdiction-set"
    /// A dataset or model: residency and use conditions; its steward.
    case dataset
    /// Which guests a partner's hosts take; the host owner.
    case donorPolicy = "donor-policy"
    /// Guardrails and export control; federation admins.
    case federation

    public static func < (a: PolicyKind, b: PolicyKind) -> Bool { a.rawValue < b.rawValue }
}

/// How sensitive data is, least strict first. A derived dataset takes the strictest class of its inputs.
public enum DataClass: String, Sendable, Hashable, Codable, CaseIterable, Comparable {
    case `public`, `internal`, personal, sensitive, health, genomic, indigenous

    var rank: Int { Self.allCases.firstIndex(of: self)! }
    public static func < (a: DataClass, b: DataClass) -> Bool { a.rank < b.rank }
}

/// A member of a jurisdiction set: a jurisdiction code (with everything it contains) or another set, optionally only
/// for hosts whose label matches (`{jurisdiction: US, when: {label: dpf_certified, equals: "true"}}`).
public struct SetMember: Sendable, Hashable, Codable {
    public var ref: String
    public var when: LabelCondition?

    public init(_ ref: String, when: LabelCondition? = nil) {
        self.ref = ref
        self.when = when
    }
}

/// A condition on a host label. A host without the label cannot be evaluated: it fails closed (`EVAL_ERROR`).
public struct LabelCondition: Sendable, Hashable, Codable {
    public var label: String
    public var equals: String

    public init(label: String, equals: String) {
        self.label = label
        self.equals = equals
    }
}

public struct JurisdictionSetRule: Sendable, Hashable, Codable {
    public var members: [SetMember]
    public init(members: [SetMember]) { self.members = members }
}

/// Where a dataset may be processed. Every given constraint must hold (they intersect).
public struct Residency: Sendable, Hashable, Codable {
    /// Jurisdiction codes or set names the host must be in; `nil` means anywhere.
    public var allow: [String]?
    /// Jurisdiction codes or set names the host must not be in.
    public var deny: [String]
    /// Partners whose hosts may process it; `nil` means any.
    public var partners: [String]?
    /// Labels the host must carry with these values (`tre: "true"`).
    public var hostLabels: [String: String]

    public init(allow: [String]? = nil, deny: [String] = [], partners: [String]? = nil, hostLabels: [String: String] = [:]) {
        self.allow = allow
        self.deny = deny
        self.partners = partners
        self.hostLabels = hostLabels
    }
}

/// Which jobs may use a dataset at all, wherever they run (checked at submission and on every change).
public struct UseConditions: Sendable, Hashable, Codable {
    /// The project's purpose must be one of these; `nil` means any purpose.
    public var purposes: [String]?
    /// Neither the project nor its partner may be commercial.
    public var nonCommercial: Bool
    /// Only projects of these partners; `nil` means any.
    public var partners: [String]?
    /// Only these projects; `nil` means any.
    public var projects: [String]?
    /// Only these kinds of job; `nil` means any.
    public var kinds: [JobKind]?

    public init(purposes: [String]? = nil, nonCommercial: Bool = false, partners: [String]? = nil, projects: [String]? = nil, kinds: [JobKind]? = nil) {
        self.purposes = purposes
        self.nonCommercial = nonCommercial
        self.partners = partners
        self.projects = projects
        self.kinds = kinds
    }
}

/// A derived dataset's link to one of its sources: the source's residency, use conditions and export class bind the
/// derived one, unless the source's steward relaxed them (recorded with the attestation that justified it).
public struct Inheritance: Sendable, Hashable, Codable {
    public var source: String
    public var relaxed: Relaxation?

    public init(source: String, relaxed: Relaxation? = nil) {
        self.source = source
        self.relaxed = relaxed
    }
}

public struct Relaxation: Sendable, Hashable, Codable {
    /// The partner that relaxed it: the source's steward.
    public var by: String
    /// Why (an anonymity attestation, a legal basis).
    public var attestation: String

    public init(by: String, attestation: String) {
        self.by = by
        self.attestation = attestation
    }
}

/// A dataset or model weights, written by its steward.
public struct DatasetRule: Sendable, Hashable, Codable {
    public var steward: String
    public var dataClass: DataClass
    /// An export class defined by the federation (model weights under export control).
    public var exportClass: String?
    public var residency: Residency
    public var use: UseConditions
    /// Sources this dataset was derived from (set by the server when a job's output is registered).
    public var derivedFrom: [Inheritance]
    /// Whether jobs reading it may have the network (`network: allow|deny`); `nil` is the default, see
    /// ``allowsNetwork``. Public data never limits the network (its jobs may run on hosts without a sandbox).
    public var network: Bool?

    public init(
        steward: String, dataClass: DataClass = .public, exportClass: String? = nil, residency: Residency = Residency(),
        use: UseConditions = UseConditions(), derivedFrom: [Inheritance] = [], network: Bool? = nil
    ) {
        self.steward = steward
        self.dataClass = dataClass
        self.exportClass = exportClass
        self.residency = residency
        self.use = use
        self.derivedFrom = derivedFrom
        self.network = network
    }

    /// Whether a job that reads it may ask for the network: always for public data, otherwise only with
    /// `network: allow`.
    public var allowsNetwork: Bool { dataClass == .public || network == true }
}

public enum Weekday: String, Sendable, Hashable, Codable, CaseIterable {
    case mon, tue, wed, thu, fri, sat, sun

    /// From `Calendar`'s weekday (1 is Sunday).
    init(calendarWeekday: Int) { self = Self.allCases[(calendarWeekday + 5) % 7] }
    var previous: Weekday { Self.allCases[(Self.allCases.firstIndex(of: self)! + 6) % 7] }
}

/// A recurring window in the host's local time. `from > to` wraps past midnight (the night belongs to the day it
/// starts on); `from == to` is the whole day.
public struct TimeWindow: Sendable, Hashable, Codable {
    /// `nil` means every day.
    public var days: [Weekday]?
    public var fromMinute: Int
    public var toMinute: Int

    public init(days: [Weekday]? = nil, fromMinute: Int, toMinute: Int) {
        self.days = days
        self.fromMinute = fromMinute
        self.toMinute = toMinute
    }
}

/// Which jobs a donor rule or federation rule is about. Every given field must match; an absent one matches all.
public struct JobMatch: Sendable, Hashable, Codable {
    public var partners: [String]?
    public var projects: [String]?
    public var kinds: [JobKind]?
    /// The strictest class among the job's inputs must be one of these.
    public var classes: [DataClass]?

    public init(partners: [String]? = nil, projects: [String]? = nil, kinds: [JobKind]? = nil, classes: [DataClass]? = nil) {
        self.partners = partners
        self.projects = projects
        self.kinds = kinds
        self.classes = classes
    }

    func matches(_ job: JobFacts) -> Bool {
        if let partners, !partners.contains(job.partner) { return false }
        if let projects, !projects.contains(job.project) { return false }
        if let kinds, !kinds.contains(job.kind) { return false }
        if let classes, !classes.contains(job.dataClass) { return false }
        return true
    }
}

/// One permit or forbid of a donor policy.
public struct DonorRule: Sendable, Hashable, Codable {
    /// Names the rule in explanations (`uon#evenings`); defaults to `permit-1`, `forbid-1`, ….
    public var id: String
    public var match: JobMatch
    /// When guests are admitted; `nil` means always (permits only).
    public var windows: [TimeWindow]?
    /// A guest must end before the window closes: one whose `max_runtime` overruns it is not started.
    public var mustFinishWithinWindow: Bool

    public init(id: String, match: JobMatch = JobMatch(), windows: [TimeWindow]? = nil, mustFinishWithinWindow: Bool = false) {
        self.id = id
        self.match = match
        self.windows = windows
        self.mustFinishWithinWindow = mustFinishWithinWindow
    }
}

/// Which guests (jobs of other partners) a partner's hosts take. A partner without one takes no guests.
public struct DonorPolicy: Sendable, Hashable, Codable {
    /// IANA time zone of the windows; a host's `timezone` label overrides it.
    public var timezone: String
    /// How long a running guest that a new version excludes may go on before it is preempted.
    public var graceSeconds: Int64
    public var permit: [DonorRule]
    public var forbid: [DonorRule]

    public static let defaultGraceSeconds: Int64 = 600

    public init(timezone: String = "UTC", graceSeconds: Int64 = Self.defaultGraceSeconds, permit: [DonorRule] = [], forbid: [DonorRule] = []) {
        self.timezone = timezone
        self.graceSeconds = graceSeconds
        self.permit = permit
        self.forbid = forbid
    }
}

/// A federation guardrail: jobs matching `match` may not run on hosts in `jurisdictions` (anywhere when `nil`).
public struct FederationForbid: Sendable, Hashable, Codable {
    public var id: String
    public var match: JobMatch
    public var jurisdictions: [String]?

    public init(id: String, match: JobMatch, jurisdictions: [String]? = nil) {
        self.id = id
        self.match = match
        self.jurisdictions = jurisdictions
    }
}

/// Federation rules: guardrails and export classes for model weights.
public struct FederationPolicy: Sendable, Hashable, Codable {
    public var forbid: [FederationForbid]
    /// Export class name → jurisdiction codes or sets where weights of that class may be loaded.
    public var exportClasses: [String: [String]]

    public init(forbid: [FederationForbid] = [], exportClasses: [String: [String]] = [:]) {
        self.forbid = forbid
        self.exportClasses = exportClasses
    }
}

public enum PolicyBody: Sendable, Hashable {
    case jurisdictionSet(JurisdictionSetRule)
    case dataset(DatasetRule)
    case donorPolicy(DonorPolicy)
    case federation(FederationPolicy)

    public var kind: PolicyKind {
        switch self {
        case .jurisdictionSet: .jurisdictionSet
        case .dataset: .dataset
        case .donorPolicy: .donorPolicy
        case .federation: .federation
        }
    }
}

/// A validated rule document.
public struct PolicyDocument: Sendable, Hashable {
    public var name: String
    /// When this version takes effect; `nil` means when it is applied.
    public var effectiveFrom: Date?
    /// Why (shown in history and explanations).
    public var reason: String?
    public var body: PolicyBody

    public var kind: PolicyKind { body.kind }
    public var key: PolicyKey { PolicyKey(kind: kind, name: name) }

    public init(name: String, effectiveFrom: Date? = nil, reason: String? = nil, body: PolicyBody) {
        self.name = name
        self.effectiveFrom = effectiveFrom
        self.reason = reason
        self.body = body
    }
}

public struct PolicyKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var kind: PolicyKind
    public var name: String

    public init(kind: PolicyKind, name: String) {
        self.kind = kind
        self.name = name
    }

    public var description: String { "\(kind.rawValue)/\(name)" }
    public static func < (a: PolicyKey, b: PolicyKey) -> Bool { (a.kind, a.name) < (b.kind, b.name) }
}

/// One applied version of a document.
public struct PolicyVersion: Sendable, Hashable {
    public var document: PolicyDocument
    public var version: Int
    public var effectiveFrom: Date

    public init(document: PolicyDocument, version: Int, effectiveFrom: Date) {
        self.document = document
        self.version = version
        self.effectiveFrom = effectiveFrom
    }

    /// `dataset/ke-health@v3`: how decisions name the rule they used.
    public var label: String { "\(document.key)@v\(version)" }
}
