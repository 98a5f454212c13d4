import ComityCore
import Foundation

/// An error as every route returns it: a stable code, a one-line message, and field errors for bad input.
public struct ErrorBody: Codable, Sendable {
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var fields: [FieldError]?
        /// Why the sovereignty rules reject a job (stable codes).
        public var reasons: [Reason]?

        public init(code: String, message: String, fields: [FieldError]? = nil, reasons: [Reason]? = nil) {
            self.code = code
            self.message = message
            self.fields = fields
            self.reasons = reasons
        }
    }

    public var error: Detail

    public init(code: String, message: String, fields: [FieldError]? = nil, reasons: [Reason]? = nil) {
        self.error = Detail(code: code, message: message, fields: fields, reasons: reasons)
    }
}

public struct Jurisdiction: Codable, Sendable, Hashable {
    public var code: String
    /// The jurisdiction that contains this one (`DE` is within `EU`).
    public var within: String?

    public init(code: String, within: String? = nil) {
        self.code = code
        self.within = within
    }
}

public struct Region: Codable, Sendable, Hashable {
    public var name: String
    public var jurisdiction: String

    public init(name: String, jurisdiction: String) {
        self.name = name
        self.jurisdiction = jurisdiction
    }
}

public struct Partner: Codable, Sendable, Hashable {
    public var name: String
    public var jurisdiction: String
    /// A company (datasets with `non_commercial: true` refuse its projects).
    public var commercial: Bool?

    public init(name: String, jurisdiction: String, commercial: Bool? = nil) {
        self.name = name
        self.jurisdiction = jurisdiction
        self.commercial = commercial
    }
}

public struct Project: Codable, Sendable, Hashable {
    public var name: String
    public var partner: String
    /// What the project is for (`health-research`), matched against datasets' `use.purposes`.
    public var purpose: String?
    public var commercial: Bool?
    /// Within its partner, projects share in proportion to these (default 1).
    public var shares: Int?

    public init(name: String, partner: String, purpose: String? = nil, commercial: Bool? = nil, shares: Int? = nil) {
        self.name = name
        self.shares = shares
        self.partner = partner
        self.purpose = purpose
        self.commercial = commercial
    }
}

public struct CreateTokenRequest: Codable, Sendable {
    public var role: Role
    public var partner: String?
    public var project: String?
    /// A label for people reading the token list (`alice-laptop`).
    public var name: String?

    public init(role: Role, partner: String? = nil, project: String? = nil, name: String? = nil) {
        self.role = role
        self.partner = partner
        self.project = project
        self.name = name
    }
}

/// A token as returned once at creation; only its hash is stored.
public struct CreatedToken: Codable, Sendable {
    public var id: Int64
    public var role: Role
    public var partner: String?
    public var project: String?
    public var token: String

    public init(id: Int64, role: Role, partner: String?, project: String?, token: String) {
        self.id = id
        self.role = role
        self.partner = partner
        self.project = project
        self.token = token
    }
}

public struct CreateJoinTokenRequest: Codable, Sendable {
    public var partner: String
    public var region: String
    /// Seconds until the token expires unused (default one day).
    public var ttlSeconds: Int64?

    public init(partner: String, region: String, ttlSeconds: Int64? = nil) {
        self.partner = partner
        self.region = region
        self.ttlSeconds = ttlSeconds
    }
}

public struct CreatedJoinToken: Codable, Sendable {
    public var id: Int64
    public var partner: String
    public var region: String
    public var expiresAt: Date
    public var token: String

    public init(id: Int64, partner: String, region: String, expiresAt: Date, token: String) {
        self.id = id
        self.partner = partner
        self.region = region
        self.expiresAt = expiresAt
        self.token = token
    }
}

/// Who the caller is.
public struct WhoAmI: Codable, Sendable {
    public var principal: String
    public var role: Role
    public var partner: String?
    public var project: String?
    public var hostId: Int64?

    public init(principal: String, role: Role, partner: String?, project: String?, hostId: Int64?) {
        self.principal = principal
        self.role = role
        self.partner = partner
        self.project = project
        self.hostId = hostId
    }
}

/// `DELETE /v1/tokens/{id}`: the token no longer authenticates (within the servers' 10 s token cache).
public struct RevokedToken: Codable, Sendable {
    public var id: Int64
    /// The principal the token belonged to.
    public var principal: String
    public init(id: Int64, principal: String) {
        self.id = id
        self.principal = principal
    }
}
