/// Parsing of the human quantities used in job files and resource files.
public enum Quantity {
    private static let binary: [(String, Int64)] = [
        ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40), ("Pi", 1 << 50),
    ]
    private static let decimal: [(String, Int64)] = [
        ("k", 1_000), ("K", 1_000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000),
    ]

    /// Parses a byte size such as `64Gi`, `512Mi`, `80G` or `1048576`.
    ///
    /// - Returns: `nil` when the text is not a non-negative size.
    public static func bytes(_ text: String) -> Int64? {
        let trimmed = text.trimmingSpaces
        for (suffix, factor) in binary + decimal where trimmed.hasSuffix(suffix) {
            guard let number = Double(trimmed.dropLast(suffix.count)), number >= 0, number.isFinite else { return nil }
            let value = number * Double(factor)
            return value < 9e18 ? Int64(value.rounded()) : nil
        }
        let plain = trimmed.hasSuffix("B") ? String(trimmed.dropLast()) : trimmed
        guard let value = Int64(plain), value >= 0 else { return nil }
        return value
    }

    /// Parses a duration such as `90s`, `30m`, `12h`, `1d`, `1h30m` or a plain number of seconds.
    ///
    /// - Returns: whole seconds, or `nil` when the text is not a positive duration.
    public static func seconds(_ text: String) -> Int64? {
        let trimmed = text.trimmingSpaces
        if let plain = Int64(trimmed) { return plain > 0 ? plain : nil }
        var total: Int64 = 0
        var digits = ""
        var sawUnit = false
        for character in trimmed {
            if character.isNumber {
                digits.append(character)
                continue
            }
            guard let amount = Int64(digits) else { return nil }
            let unit: Int64
            switch character {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3_600
            case "d": unit = 86_400
            default: return nil
            }
            let (part, overflowA) = amount.multipliedReportingOverflow(by: unit)
            let (sum, overflowB) = total.addingReportingOverflow(part)
            guard !overflowA, !overflowB else { return nil }
            total = sum
            digits = ""
            sawUnit = true
        }
        guard digits.isEmpty, sawUnit, total > 0 else { return nil }
        return total
    }

    /// Formats a byte count in the largest binary unit that keeps it whole (`64Gi`); a size that no unit divides is
    /// shown in the largest unit with one decimal (`4.0Ki` for 4095), for people, not for parsing back.
    public static func formatBytes(_ bytes: Int64) -> String {
        for (suffix, factor) in binary.reversed() where bytes >= factor && bytes % factor == 0 {
            return "\(bytes / factor)\(suffix)"
        }
        for (suffix, factor) in binary.reversed() where bytes >= factor {
            let value = Double(bytes) / Double(factor)
            return "\((value * 10).rounded() / 10)\(suffix)"
        }
        return "\(bytes)"
    }

    /// Formats seconds as `1h30m`, `45s`, `2d`.
    public static func formatSeconds(_ seconds: Int64) -> String {
        if seconds <= 0 { return "0s" }
        var rest = seconds
        var parts = ""
        for (unit, size) in [("d", Int64(86_400)), ("h", 3_600), ("m", 60), ("s", 1)] where rest >= size {
            parts += "\(rest / size)\(unit)"
            rest %= size
        }
        return parts
    }

    /// Formats CPU millicores as `8`, `0.5`.
    public static func formatCPUs(_ millis: Int) -> String {
        millis % 1000 == 0 ? "\(millis / 1000)" : "\(Double(millis) / 1000)"
    }
}

extension String {
    var trimmingSpaces: String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice = slice.dropFirst() }
        while let last = slice.last, last.isWhitespace { slice = slice.dropLast() }
        return String(slice)
    }
}
