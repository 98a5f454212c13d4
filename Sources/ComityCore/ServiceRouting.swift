/// Which replicas of a service the gateway may send a request's data to, and what happens to replicas that end.
///
/// The caller of the gateway states where the data it sends may be processed (jurisdiction codes or
/// jurisdiction-set names, as in a dataset's residency); the gateway forwards only to healthy replicas on hosts inside
/// that area, and says why when none is.
public enum ServiceRouting {
    /// The areas named in a `Comity-Data-Jurisdiction` header: comma separated, each a jurisdiction code or a set name.
    ///
    /// - Returns: the names in order without repeats, or what is wrong with the text (as an error of `field`).
    public static func areas(_ header: String, field: String) -> Result<[String], ValidationFailure> {
        func failure(_ message: String) -> Result<[String], ValidationFailure> {
            .failure(ValidationFailure([FieldError(field: field, message: message)]))
        }
        var names: [String] = []
        for part in header.split(separator: ",", omittingEmptySubsequences: false) {
            let name = String(part).trimmingSpaces
            guard !name.isEmpty else { return failure("expected jurisdiction codes or set names separated by commas, got \"\(header)\"") }
            guard name.count <= 64, name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)) })
            else { return failure("\"\(name)\" is not a jurisdiction code or set name") }
            if !names.contains(name) { names.append(name) }
        }
        guard !names.isEmpty else { return failure("expected at least one jurisdiction code or set name") }
        return .success(names)
    }

    /// The verdict for one request.
    public struct Decision: Sendable, Hashable {
        /// Indices (into the replicas given) the data may go to, in the order given.
        public var permitted: [Int]
        /// Why none may, when `permitted` is empty.
        public var refusal: String?
    }

    /// Which of `hosts` (the hosts of a service's healthy replicas) data bound to `areas` may reach.
    ///
    /// A host whose membership cannot be decided (a set member conditioned on a label the host lacks) is not
    /// permitted: fail closed, as the scheduler does.
    public static func decide(service: String, hosts: [HostFacts], areas: [String], policies: ActivePolicies) -> Decision {
        var permitted: [Int] = []
        var undecided: [String] = []
        for (index, host) in hosts.enumerated() {
            switch policies.contains(areas, host) {
            case .success(true): permitted.append(index)
            case .success(false): break
            case .failure(let error): undecided.append(error.message)
            }
        }
        guard permitted.isEmpty else { return Decision(permitted: permitted, refusal: nil) }
        let area = areas.joined(separator: ", ")
        guard !hosts.isEmpty else {
            return Decision(permitted: [], refusal: "service \(service) has no healthy replica")
        }
        let places = orderedUnique(hosts.map(\.jurisdiction))
        let count = hosts.count == 1 ? "1 healthy replica" : "\(hosts.count) healthy replicas"
        var text = "service \(service) has \(count), in \(places.joined(separator: " and ")); data from \(area) may go only to hosts in \(area)"
        if !undecided.isEmpty { text += " (\(orderedUnique(undecided).joined(separator: "; ")))" }
        return Decision(permitted: [], refusal: text)
    }

    /// Areas that name neither a jurisdiction nor a jurisdiction set in force.
    public static func unknownAreas(_ areas: [String], policies: ActivePolicies) -> [String] {
        areas.filter { policies.descendants[$0] == nil && policies.expandedSets[$0] == nil }
    }

    static func orderedUnique(_ items: [String]) -> [String] {
        var seen: Set<String> = []
        return items.filter { seen.insert($0).inserted }
    }

    /// Whether a replica job that ended should be replaced by a new job for the same replica index.
    ///
    /// A replica ended by the infrastructure (lost host, agent error, preemption, a cancel) is always replaced. One
    /// whose own process ended is replaced as its restart policy says: `always` after any exit, `on-failure` after a
    /// non-zero exit, `never` not at all (the agent restarts in place by the same policy; a replica's job ends by an
    /// exit only when the agent gave up).
    ///
    /// - Parameters:
    ///   - state: the ended job's state.
    ///   - exitCode: its exit code when its process exited (`nil` when it never ran to an exit).
    public static func replaces(_ policy: ServiceSpec.RestartPolicy, state: JobState, exitCode: Int32?) -> Bool {
        switch state {
        case .queued, .assigned, .running: return false
        case .cancelled: return true
        case .failed:
            guard exitCode != nil else { return true }
            return policy != .never
        case .succeeded:
            return policy == .always
        }
    }

    /// How long to wait before replacing a replica whose job ended, given how many jobs of that replica ended in the
    /// last ``backoffWindowSeconds``: the first replacement is immediate, then 5 s, doubling up to 5 min.
    public static func backoffSeconds(recentEnds: Int) -> Int {
        guard recentEnds > 1 else { return 0 }
        let exponent = min(recentEnds - 2, 6)
        return min(5 << exponent, 300)
    }

    /// Ends counted for ``backoffSeconds(recentEnds:)``.
    public static let backoffWindowSeconds = 1_800
}
