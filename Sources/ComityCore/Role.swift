/// Who a principal is, which decides what it may do.
public enum Role: String, Sendable, Hashable, Codable, CaseIterable {
    /// Manages everything.
    case admin
    /// Reads everything, changes nothing.
    case auditor
    /// Manages one partner: its projects, hosts and join tokens; sees its projects' jobs.
    case partnerAdmin = "partner-admin"
    /// Submits and follows jobs of one project.
    case researcher
    /// One host's agent: sees only that host's work.
    case agent
}
