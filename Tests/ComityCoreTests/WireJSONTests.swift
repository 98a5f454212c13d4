import ComityAPI
import Foundation
import Testing

@Suite("Wire JSON dates")
struct WireJSONTests {
    @Test(
        "dates format as UTC ISO 8601 with milliseconds and parse back",
        arguments: [
            (0.0, "1970-01-01T00:00:00.000Z"),
            (1_795_771_740.829, "2026-11-27T09:29:00.829Z"),
            (951_782_400.5, "2000-02-29T00:00:00.500Z"),
            (-1.25, "1969-12-31T23:59:58.750Z"),
        ]
    )
    func format(seconds: Double, text: String) throws {
        let date = Date(timeIntervalSince1970: seconds)
        #expect(WireJSON.format(date) == text)
        let data = try WireJSON.shared.encode(["at": date])
        let decoded = try WireJSON.sharedDecoder.decode([String: Date].self, from: data)
        #expect(abs(try #require(decoded["at"]).timeIntervalSince1970 - seconds) < 0.001)
    }
}
