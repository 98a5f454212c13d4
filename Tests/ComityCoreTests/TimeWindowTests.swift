import ComityCore
import Foundation
import Testing

/// Donor windows in the host's local time: wrapping past midnight, weekdays, daylight-saving changes, and the
/// "opens in" text of explanations.
@Suite("Donor time windows")
struct TimeWindowTests {
    static let evenings = #"[{"from": "18:00", "to": "06:00"}]"#
    static let weekends = #"[{"days": ["sat", "sun"], "from": "00:00", "to": "24:00"}]"#
    static let nights = #"[{"from": "01:00", "to": "04:00"}]"#

    /// mak's host in Kenya, with one permit (`mak#w`) open in `windows`; the job is a uon guest.
    func verdict(
        _ windows: String, in timezone: String, at time: String, runtime: Int64 = 600, mustFinish: Bool = false,
        labels: [String: String] = [:]
    ) throws -> Verdict {
        let snapshot = try Fixture.snapshot([
            """
            {"kind": "donor-policy", "name": "mak", "timezone": "\(timezone)",
             "permit": [{"id": "w", "windows": \(windows), "must_finish_within_window": \(mustFinish)}]}
            """
        ])
        return snapshot.evaluate(Fixture.job("asr", runtime: runtime), on: Fixture.host(1, "mak", "KE", labels: labels), at: Fixture.time(time))
    }

    func isOpen(_ windows: String, in timezone: String, at time: String) throws -> Bool {
        let found = try verdict(windows, in: timezone, at: time)
        #expect(found.eligible || found.codes == [.donorWindow], "\(time): \(found.failures)")
        return found.eligible
    }

    @Test("18:00-06:00 in Nairobi (UTC+3) wraps past midnight")
    func nairobiEvenings() throws {
        let zone = "Africa/Nairobi"
        #expect(try !isOpen(Self.evenings, in: zone, at: "2026-06-10T14:59:00Z"))  // 17:59
        #expect(try isOpen(Self.evenings, in: zone, at: "2026-06-10T15:00:00Z"))  // 18:00
        #expect(try isOpen(Self.evenings, in: zone, at: "2026-06-10T23:00:00Z"))  // 02:00
        #expect(try isOpen(Self.evenings, in: zone, at: "2026-06-11T02:59:00Z"))  // 05:59
        #expect(try !isOpen(Self.evenings, in: zone, at: "2026-06-11T03:00:00Z"))  // 06:00
    }

    @Test("a closed window says when it opens: opens in 3h12m")
    func opensIn() throws {
        let found = try verdict(Self.evenings, in: "Africa/Nairobi", at: "2026-06-10T11:48:00Z")  // 14:48
        #expect(found.codes == [.donorWindow])
        let reason = try #require(found.failures.first)
        #expect(reason.detail == "guests only 18:00-06:00 Africa/Nairobi (opens in 3h12m)")
        #expect(reason.summaryLabel == "DONOR_WINDOW(mak#w: guests 18:00-06:00 Africa/Nairobi, opens in 3h12m)")
        #expect(reason.category == .donor)
        let morning = try verdict(Self.evenings, in: "Africa/Nairobi", at: "2026-06-11T03:00:00Z")
        #expect(morning.failures.first?.detail.hasSuffix("(opens in 12h)") == true)
    }

    @Test("weekend-only windows, and how long until the weekend")
    func weekends() throws {
        let zone = "Africa/Nairobi"
        #expect(try !isOpen(Self.weekends, in: zone, at: "2026-06-12T20:59:00Z"))  // Friday 23:59
        #expect(try isOpen(Self.weekends, in: zone, at: "2026-06-12T21:00:00Z"))  // Saturday 00:00
        #expect(try isOpen(Self.weekends, in: zone, at: "2026-06-13T07:00:00Z"))  // Saturday 10:00
        #expect(try isOpen(Self.weekends, in: zone, at: "2026-06-14T20:59:00Z"))  // Sunday 23:59
        #expect(try !isOpen(Self.weekends, in: zone, at: "2026-06-14T21:00:00Z"))  // Monday 00:00
        let wednesday = try verdict(Self.weekends, in: zone, at: "2026-06-10T12:00:00Z")  // Wednesday 15:00
        #expect(wednesday.failures.first?.detail == "guests only sat,sun 00:00-24:00 Africa/Nairobi (opens in 2d9h)")
        let monday = try verdict(Self.weekends, in: zone, at: "2026-06-14T21:00:00Z")
        #expect(monday.failures.first?.detail.hasSuffix("(opens in 5d)") == true)
    }

    @Test("a night that wraps belongs to the day it starts on")
    func wrapBelongsToStartDay() throws {
        let fridayNight = #"[{"days": ["fri"], "from": "22:00", "to": "02:00"}]"#
        #expect(try isOpen(fridayNight, in: "UTC", at: "2026-06-12T23:00:00Z"))  // Friday 23:00
        #expect(try isOpen(fridayNight, in: "UTC", at: "2026-06-13T01:00:00Z"))  // Saturday 01:00
        #expect(try !isOpen(fridayNight, in: "UTC", at: "2026-06-12T01:00:00Z"))  // Friday 01:00 (Thursday's night)
        #expect(try !isOpen(fridayNight, in: "UTC", at: "2026-06-13T22:30:00Z"))  // Saturday 22:30
    }

    @Test("Berlin, night of the spring change (2026-03-29): 01:00-04:00 local lasts two hours")
    func springForward() throws {
        let zone = "Europe/Berlin"
        #expect(try !isOpen(Self.nights, in: zone, at: "2026-03-28T23:59:00Z"))  // 00:59 CET
        #expect(try isOpen(Self.nights, in: zone, at: "2026-03-29T00:00:00Z"))  // 01:00 CET
        #expect(try isOpen(Self.nights, in: zone, at: "2026-03-29T01:00:00Z"))  // 03:00 CEST
        #expect(try isOpen(Self.nights, in: zone, at: "2026-03-29T01:59:00Z"))  // 03:59 CEST
        #expect(try !isOpen(Self.nights, in: zone, at: "2026-03-29T02:00:00Z"))  // 04:00 CEST
        let before = try verdict(Self.nights, in: zone, at: "2026-03-28T23:59:00Z")
        #expect(before.failures.first?.detail.hasSuffix("(opens in 1m)") == true)

        // A guest must finish by 04:00 CEST, two real hours after 01:00 CET.
        let start = "2026-03-29T00:00:00Z"
        #expect(try verdict(Self.nights, in: zone, at: start, runtime: 2 * 3600, mustFinish: true).eligible)
        let over = try verdict(Self.nights, in: zone, at: start, runtime: 2 * 3600 + 60, mustFinish: true)
        #expect(over.codes == [.donorWindowFit])
        #expect(over.failures.first?.detail.contains("closes in 2h;") == true)
    }

    @Test("Berlin, night of the autumn change (2026-10-25): 01:00-04:00 local lasts four hours")
    func fallBack() throws {
        let zone = "Europe/Berlin"
        #expect(try !isOpen(Self.nights, in: zone, at: "2026-10-24T22:59:00Z"))  // 00:59 CEST
        #expect(try isOpen(Self.nights, in: zone, at: "2026-10-24T23:00:00Z"))  // 01:00 CEST
        #expect(try isOpen(Self.nights, in: zone, at: "2026-10-25T00:30:00Z"))  // 02:30 CEST
        #expect(try isOpen(Self.nights, in: zone, at: "2026-10-25T01:30:00Z"))  // 02:30 CET, the second time
        #expect(try isOpen(Self.nights, in: zone, at: "2026-10-25T02:59:00Z"))  // 03:59 CET
        #expect(try !isOpen(Self.nights, in: zone, at: "2026-10-25T03:00:00Z"))  // 04:00 CET

        let start = "2026-10-24T23:00:00Z"
        #expect(try verdict(Self.nights, in: zone, at: start, runtime: 4 * 3600, mustFinish: true).eligible)
        let over = try verdict(Self.nights, in: zone, at: start, runtime: 4 * 3600 + 60, mustFinish: true)
        #expect(over.codes == [.donorWindowFit])
        #expect(over.failures.first?.detail.contains("closes in 4h;") == true)
        // From inside the repeated hour: 04:00 CET is 2h30m after 02:30 CEST.
        let inside = try verdict(Self.nights, in: zone, at: "2026-10-25T00:30:00Z", runtime: 3 * 3600, mustFinish: true)
        #expect(inside.failures.first?.detail.contains("closes in 2h30m;") == true)
    }

    @Test("a window starting in the skipped hour opens at the first valid time after it")
    func startInSkippedHour() throws {
        let zone = "Europe/Berlin"
        let skipped = #"[{"from": "02:30", "to": "05:00"}]"#
        #expect(try !isOpen(skipped, in: zone, at: "2026-03-29T00:59:00Z"))  // 01:59 CET
        #expect(try isOpen(skipped, in: zone, at: "2026-03-29T01:00:00Z"))  // 03:00 CEST
        let before = try verdict(skipped, in: zone, at: "2026-03-29T00:00:00Z")  // 01:00 CET
        #expect(before.failures.first?.detail.hasSuffix("(opens in 1h)") == true, "\(before.failures)")
        // The next night is an ordinary one.
        let nextNight = try verdict(skipped, in: zone, at: "2026-03-30T00:00:00Z")  // 02:00 CEST
        #expect(nextNight.failures.first?.detail.hasSuffix("(opens in 30m)") == true, "\(nextNight.failures)")
    }

    @Test("18:00 local is 18:00 on both sides of a change")
    func sameLocalTime() throws {
        let zone = "Europe/Berlin"
        let evening = #"[{"from": "18:00", "to": "20:00"}]"#
        let saturday = try verdict(evening, in: zone, at: "2026-03-28T12:00:00Z")  // 13:00 CET
        #expect(saturday.failures.first?.detail.hasSuffix("(opens in 5h)") == true)
        let sunday = try verdict(evening, in: zone, at: "2026-03-29T12:00:00Z")  // 14:00 CEST
        #expect(sunday.failures.first?.detail.hasSuffix("(opens in 4h)") == true)
        #expect(try isOpen(evening, in: zone, at: "2026-03-29T16:00:00Z"))
        #expect(try !isOpen(evening, in: zone, at: "2026-03-28T16:00:00Z"))
    }

    @Test("must_finish_within_window: a guest whose max_runtime overruns the window is not started")
    func mustFinish() throws {
        let zone = "Africa/Nairobi"
        let at = "2026-06-11T02:00:00Z"  // 05:00, an hour before 06:00
        #expect(try verdict(Self.evenings, in: zone, at: at, runtime: 3600, mustFinish: true).eligible)
        let late = try verdict(Self.evenings, in: zone, at: at, runtime: 2 * 3600, mustFinish: true)
        #expect(late.codes == [.donorWindowFit])
        #expect(late.failures.first?.detail.contains("closes in 1h; max_runtime is 2h") == true)
        #expect(try verdict(Self.evenings, in: zone, at: at, runtime: 2 * 3600).eligible)
    }

    @Test("must_finish_within_window counts adjoining windows as one stretch")
    func mustFinishAcrossMidnight() throws {
        let zone = "Africa/Nairobi"
        // Saturday 20:00: the weekend goes on through Sunday.
        #expect(try verdict(Self.weekends, in: zone, at: "2026-06-13T17:00:00Z", runtime: 10 * 3600, mustFinish: true).eligible)
        // Sunday 20:00: Monday is not weekend.
        let sunday = try verdict(Self.weekends, in: zone, at: "2026-06-14T17:00:00Z", runtime: 10 * 3600, mustFinish: true)
        #expect(sunday.codes == [.donorWindowFit])
        #expect(sunday.failures.first?.detail.contains("closes in 4h;") == true)
        // An evening written as two windows split at midnight.
        let split = #"[{"from": "18:00", "to": "24:00"}, {"from": "00:00", "to": "06:00"}]"#
        #expect(try verdict(split, in: zone, at: "2026-06-10T19:00:00Z", runtime: 6 * 3600, mustFinish: true).eligible)
        #expect(try !verdict(split, in: zone, at: "2026-06-10T19:00:00Z", runtime: 9 * 3600, mustFinish: true).eligible)
    }

    @Test("a window from a time to the same time is the whole day, for opening and for must-finish alike")
    func wholeDay() throws {
        let saturday = #"[{"days": ["sat"], "from": "06:00", "to": "06:00"}]"#
        #expect(try isOpen(saturday, in: "UTC", at: "2026-06-13T03:00:00Z"))
        #expect(try !isOpen(saturday, in: "UTC", at: "2026-06-14T03:00:00Z"))
        let friday = try verdict(saturday, in: "UTC", at: "2026-06-12T23:00:00Z")
        #expect(friday.failures.first?.detail.hasSuffix("(opens in 1h)") == true, "\(friday.failures)")
        // Saturday ends at midnight, not at 06:00 on Sunday.
        #expect(try verdict(saturday, in: "UTC", at: "2026-06-13T03:00:00Z", runtime: 20 * 3600, mustFinish: true).eligible)
        #expect(try verdict(saturday, in: "UTC", at: "2026-06-13T03:00:00Z", runtime: 22 * 3600, mustFinish: true).codes == [.donorWindowFit])
        #expect(try verdict(saturday, in: "UTC", at: "2026-06-13T20:00:00Z", runtime: 8 * 3600, mustFinish: true).codes == [.donorWindowFit])
    }

    @Test("must-finish fails closed when the close cannot be placed (a window ending inside the repeated hour)")
    func mustFinishInRepeatedHour() throws {
        // 01:00-02:30 in Berlin on 2026-10-25: at 02:00 CET, the second time round, the window is open again until
        // 02:30 CET; a guest of two hours cannot finish in it.
        let window = #"[{"from": "01:00", "to": "02:30"}]"#
        #expect(try isOpen(window, in: "Europe/Berlin", at: "2026-10-25T01:00:00Z"))
        let found = try verdict(window, in: "Europe/Berlin", at: "2026-10-25T01:00:00Z", runtime: 2 * 3600, mustFinish: true)
        #expect(found.codes == [.donorWindowFit])
    }

    @Test("a host's timezone label overrides the policy's; an unknown one fails closed")
    func hostTimeZone() throws {
        let at = "2026-06-10T16:00:00Z"  // 19:00 in Nairobi, 16:00 in UTC
        #expect(try !verdict(Self.evenings, in: "UTC", at: at).eligible)
        #expect(try verdict(Self.evenings, in: "UTC", at: at, labels: ["timezone": "Africa/Nairobi"]).eligible)
        let unknown = try verdict(Self.evenings, in: "UTC", at: at, labels: ["timezone": "Mars/Olympus_Mons"])
        #expect(unknown.codes == [.evalError])
        #expect(unknown.failures.first?.detail.contains("Mars/Olympus_Mons") == true)
    }

    @Test("another permit without a window admits the guest while the window is closed")
    func otherPermit() throws {
        let snapshot = try Fixture.snapshot([
            """
            {"kind": "donor-policy", "name": "mak", "timezone": "Africa/Nairobi",
             "permit": [{"id": "evenings", "windows": \(Self.evenings)}, {"id": "serving", "kinds": ["inference"]}]}
            """
        ])
        let host = Fixture.host(1, "mak", "KE")
        #expect(snapshot.evaluate(Fixture.job("asr", kind: .inference), on: host, at: Fixture.noon).eligible)
        #expect(snapshot.evaluate(Fixture.job("asr"), on: host, at: Fixture.noon).codes == [.donorWindow])
    }

    @Test("durations read as in explanations")
    func durations() {
        #expect(ActivePolicies.duration(0) == "0s")
        #expect(ActivePolicies.duration(59) == "59s")
        #expect(ActivePolicies.duration(60) == "1m")
        #expect(ActivePolicies.duration(3 * 3600 + 12 * 60) == "3h12m")
        #expect(ActivePolicies.duration(3 * 3600) == "3h")
        #expect(ActivePolicies.duration(2 * 86400 + 9 * 3600 + 59) == "2d9h")
        #expect(ActivePolicies.duration(5 * 86400) == "5d")
    }
}
