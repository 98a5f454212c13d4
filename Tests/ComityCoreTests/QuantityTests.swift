import ComityCore
import Testing

@Suite("Quantity")
struct QuantityTests {
    static let KiB: Int64 = 1 << 10
    static let MiB: Int64 = 1 << 20
    static let GiB: Int64 = 1 << 30
    static let TiB: Int64 = 1 << 40
    static let PiB: Int64 = 1 << 50

    // MARK: bytes

    @Test(
        "bytes parses sizes",
        arguments: [
            ("64Gi", 64 * GiB),
            ("512Mi", 512 * MiB),
            ("80G", 80_000_000_000),
            ("1.5Gi", 1_610_612_736),
            ("1048576", 1_048_576),
            ("1024B", 1024),
            ("0", 0),
            ("0Gi", 0),
            ("1Ki", KiB),
            ("2Ti", 2 * TiB),
            ("1Pi", PiB),
            ("1k", 1_000),
            ("1K", 1_000),
            ("3M", 3_000_000),
            ("2T", 2_000_000_000_000),
            ("0.5Mi", 512 * KiB),
            ("  64Gi\t", 64 * GiB),
            ("\n1048576 ", 1_048_576),
        ] as [(String, Int64)]
    )
    func bytesGood(text: String, expected: Int64) {
        #expect(Quantity.bytes(text) == expected)
    }

    @Test(
        "bytes rejects what is not a non-negative size",
        arguments: [
            "-1Gi", "lots", "", "   ", "Gi", "Mi", "B", "-1", "-1B", "1.5", "1.5B", "64 Gi", "1Xi", "12e",
            "nanGi", "infGi", "Gi64", "1Gi1", "9999999999Pi", "99999999999999999999",
        ]
    )
    func bytesBad(text: String) {
        #expect(Quantity.bytes(text) == nil)
    }

    // MARK: seconds

    @Test(
        "seconds parses durations",
        arguments: [
            ("90s", 90),
            ("30m", 1_800),
            ("12h", 43_200),
            ("1d", 86_400),
            ("1h30m", 5_400),
            ("1d2h3m4s", 93_784),
            ("30", 30),
            ("1", 1),
            ("0h5m", 300),
            ("  45s ", 45),
            ("720h", 2_592_000),
        ] as [(String, Int64)]
    )
    func secondsGood(text: String, expected: Int64) {
        #expect(Quantity.seconds(text) == expected)
    }

    @Test(
        "seconds rejects what is not a positive duration",
        arguments: [
            "0s", "0", "0h0m", "h", "5x", "", "  ", "-5", "-5s", "1.5h", "1h 30m", "30M", "1w", "5s3", "s5", "1hh",
            "forever", "99999999999999999999",
        ]
    )
    func secondsBad(text: String) {
        #expect(Quantity.seconds(text) == nil)
    }

    @Test("seconds returns nil for a duration that overflows Int64 instead of crashing")
    func secondsOverflow() {
        #expect(Quantity.seconds("999999999999999d") == nil)
        #expect(Quantity.seconds("9223372036854775807s1s") == nil)
    }

    // MARK: formatting

    @Test(
        "formatBytes uses the largest whole binary unit",
        arguments: [
            (0, "0"),
            (1, "1"),
            (1023, "1023"),
            (1024, "1Ki"),
            (1536, "1.5Ki"),
            (64 * GiB, "64Gi"),
            (512 * MiB, "512Mi"),
            (1_610_612_736, "1536Mi"),
            (80_000_000_000, "78125000Ki"),
            (1_500_000_000, "1.4Gi"),
            (1025, "1.0Ki"),
            (3 * TiB, "3Ti"),
            (1024 * PiB, "1024Pi"),
        ] as [(Int64, String)]
    )
    func formatBytes(bytes: Int64, expected: String) {
        #expect(Quantity.formatBytes(bytes) == expected)
    }

    @Test(
        "formatBytes of a whole unit parses back to the same bytes",
        arguments: [0, 1, 1000, 1024, 4096, 1_048_576, 512 * MiB, 1_610_612_736, 64 * GiB, 80 * GiB, 3 * TiB, 7 * PiB]
            as [Int64]
    )
    func bytesRoundTrip(bytes: Int64) throws {
        let text = Quantity.formatBytes(bytes)
        #expect(Quantity.bytes(text) == bytes, "\(bytes) formatted as \(text)")
    }

    @Test("formatBytes of sizes that parse, in every unit, round trips exactly")
    func bytesRoundTripSweep() {
        for suffix in ["", "Ki", "Mi", "Gi", "Ti", "Pi"] {
            for n in [1, 2, 3, 7, 10, 100, 1000, 1023, 1024, 4096] {
                let parsed = Quantity.bytes("\(n)\(suffix)")
                guard let parsed else {
                    Issue.record("\(n)\(suffix) did not parse")
                    continue
                }
                #expect(Quantity.bytes(Quantity.formatBytes(parsed)) == parsed, "\(n)\(suffix)")
            }
        }
    }

    /// A size no binary unit divides is shown rounded, for people: it is never meant to be parsed back exactly.
    @Test("formatBytes rounds sizes that are not multiples of 1024 to one decimal", arguments: [(1025, "1.0Ki"), (4095, "4.0Ki")] as [(Int64, String)])
    func bytesOdd(bytes: Int64, text: String) {
        #expect(Quantity.formatBytes(bytes) == text)
    }

    @Test(
        "formatSeconds",
        arguments: [
            (0, "0s"),
            (-5, "0s"),
            (1, "1s"),
            (45, "45s"),
            (60, "1m"),
            (90, "1m30s"),
            (3_600, "1h"),
            (5_400, "1h30m"),
            (43_200, "12h"),
            (86_400, "1d"),
            (172_800, "2d"),
            (93_784, "1d2h3m4s"),
            (86_401, "1d1s"),
        ] as [(Int64, String)]
    )
    func formatSeconds(seconds: Int64, expected: String) {
        #expect(Quantity.formatSeconds(seconds) == expected)
    }

    @Test(
        "formatSeconds parses back to the same seconds",
        arguments: [1, 59, 60, 61, 90, 3_599, 3_600, 5_400, 43_200, 86_399, 86_400, 93_784, 2_592_000, 31_536_000]
            as [Int64]
    )
    func secondsRoundTrip(seconds: Int64) {
        #expect(Quantity.seconds(Quantity.formatSeconds(seconds)) == seconds)
    }

    @Test("seconds(formatSeconds(n)) == n for every n up to two days, in steps")
    func secondsRoundTripSweep() {
        var n: Int64 = 1
        while n <= 172_800 {
            #expect(Quantity.seconds(Quantity.formatSeconds(n)) == n)
            n += 37
        }
    }

    @Test(
        "formatCPUs",
        arguments: [(0, "0"), (1000, "1"), (8000, "8"), (500, "0.5"), (1500, "1.5"), (250, "0.25"), (64_000, "64")]
            as [(Int, String)]
    )
    func formatCPUs(millis: Int, expected: String) {
        #expect(Quantity.formatCPUs(millis) == expected)
    }
}
