import ComityAPI
import ComityCore
import Foundation
import Testing

@testable import ComityServer

/// The query parameters of the fair-sharing routes: bad values are 400s naming the field and what was expected.
@Suite("Sharing routes: query parameters")
struct SharingQueryTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("since: a duration back from now, an ISO 8601 time or date; 30 days by default")
    func since() throws {
        #expect(try Routes.usageSince(nil, now: now) == now.addingTimeInterval(-30 * 86_400))
        #expect(try Routes.usageSince("7d", now: now) == now.addingTimeInterval(-7 * 86_400))
        #expect(try Routes.usageSince("1h30m", now: now) == now.addingTimeInterval(-5_400))
        #expect(try Routes.usageSince("2026-11-27T10:00:00Z", now: now) == Date(timeIntervalSince1970: 1_795_773_600))
        #expect(try Routes.usageSince("2026-11-27T10:00:00.500Z", now: now) == Date(timeIntervalSince1970: 1_795_773_600.5))
        #expect(try Routes.usageSince("2026-11-27", now: now) == Date(timeIntervalSince1970: 1_795_737_600))
    }

    @Test("since: anything else is a 400 on field since", arguments: ["yesterday", "7x", "-3d", "", "99999d"])
    func badSince(_ text: String) {
        #expect {
            try Routes.usageSince(text, now: now)
        } throws: { error in
            guard let error = error as? APIError else { return false }
            return error.code == "invalid" && error.fields?.first?.field == "since" && error.message.contains("expected")
        }
    }

    @Test("by: partner by default; an unknown grouping names the choices")
    func grouping() throws {
        #expect(try Routes.usageGrouping(nil) == .partner)
        #expect(try Routes.usageGrouping("region") == .region)
        #expect {
            try Routes.usageGrouping("team")
        } throws: { error in
            (error as? APIError)?.fields?.first?.field == "by" && (error as? APIError)?.message.contains("partner, project, host, region") == true
        }
    }

    @Test("all: true or false")
    func boolean() throws {
        #expect(try Routes.boolean(nil, field: "all") == nil)
        #expect(try Routes.boolean("true", field: "all") == true)
        #expect(try Routes.boolean("false", field: "all") == false)
        #expect(throws: APIError.self) { try Routes.boolean("yes please", field: "all") }
    }

    @Test("a GPU pattern in the path is percent-decoded")
    func pattern() throws {
        #expect(try Routes.pathText("A100%2080GB") == "A100 80GB")
        #expect(try Routes.pathText("H100") == "H100")
    }
}
