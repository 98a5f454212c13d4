import ArgumentParser
import ComityCore
import Foundation

/// Parsing and printing of the fractions, percentages and resource-hours of fair sharing.
enum ShareText {
    /// Parses `20%` or `0.2` as 0.2; with `allowNone`, `none` (or `unlimited`) is `nil`.
    ///
    /// - Parameters:
    ///   - option: the option's name for the error, e.g. `--share`.
    ///   - lowerOpen: whether 0 itself is refused (a grant of nothing).
    /// - Throws: `ValidationError` naming the option and what it expects.
    static func fraction(_ text: String, option: String, allowNone: Bool, lowerOpen: Bool = false) throws -> Double? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        if allowNone, trimmed == "none" || trimmed == "unlimited" { return nil }
        let range = lowerOpen ? "a value above 0% and at most 100%" : "a value from 0% to 100%"
        let forms = "a percentage such as 20% or a fraction such as 0.2" + (allowNone ? ", or none for no limit" : "")
        let value: Double?
        if trimmed.hasSuffix("%") {
            value = Double(trimmed.dropLast().trimmingCharacters(in: .whitespaces)).map { $0 / 100 }
        } else {
            value = Double(trimmed)
        }
        guard let value, value.isFinite else {
            throw ValidationError("\(option): expected \(forms), got \"\(text)\"")
        }
        guard lowerOpen ? value > 0 : value >= 0, value <= 1 else {
            var message = "\(option): expected \(range) (\(forms)), got \"\(text)\""
            if !trimmed.hasSuffix("%"), value > 1, value <= 100 { message += "; did you mean \(trimmed)%?" }
            throw ValidationError(message)
        }
        return value
    }

    /// `2%`, `33.33%`, `0.5%`: a fraction as a percentage with at most two decimals.
    static func percent(_ fraction: Double) -> String {
        number(fraction * 100, decimals: 2) + "%"
    }

    /// A limit that may be unlimited: `20%` or `none`.
    static func limit(_ fraction: Double?) -> String {
        fraction.map(percent) ?? "none"
    }

    /// Resource-hours (or amounts) with at most two decimals: `1234.5`, `0.25`, `0`.
    static func hours(_ value: Double) -> String {
        number(value, decimals: 2)
    }

    /// A number with at most `decimals` decimals, trailing zeros dropped (`2`, `2.5`, `0.25`).
    static func number(_ value: Double, decimals: Int) -> String {
        var text = String(format: "%.\(decimals)f", value)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }
}
