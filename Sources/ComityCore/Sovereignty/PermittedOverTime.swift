import Foundation

extension PolicySnapshot {
    /// Every jurisdiction the job's data may reach under the rules in force at `time` or under any version already
    /// announced for later. This is what the database checks when an attempt is bound, so it must never refuse a
    /// placement that a version in force at placement time allows; the engine decides the rest.
    public func permitted(_ job: JobFacts, from time: Date) -> PermittedJurisdictions {
        var result = active(at: time).permitted(job)
        for change in changes(after: time, until: .distantFuture) {
            switch (result, active(at: change).permitted(job)) {
            case (.anywhere, _), (_, .anywhere): return .anywhere
            case (.only(let now), .only(let later)): result = .only(now.union(later))
            }
        }
        return result
    }
}
