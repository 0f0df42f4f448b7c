//! "Did you mean" hints for a name that is not there: the closest known name, and the
//! words that offer it. Every such message in VizFlow comes from here.
//!
//! ```
//! use vizflow_operators::suggest::{closest, did_you_mean};
//!
//! let columns = ["AskPrice1", "BidPrice1", "qty"];
//! assert_eq!(closest("ask_price1", columns), Some("AskPrice1"));
//! assert_eq!(closest("volume", columns), None);
//! assert_eq!(did_you_mean(Some("qty")), "did you mean 'qty'? ");
//! ```

/// The candidate closest to `name` by edit distance, ignoring case, if it is close enough to
/// be a likely typo: at most `max(2, len / 3)` edits, `len` being `name`'s length in chars.
/// Ties go to the earliest candidate.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let name: Vec<char> = name.to_lowercase().chars().collect();
    let limit = (name.len() / 3).max(2);
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(&name, &candidate.to_lowercase()), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `did you mean 'x'? ` (with its trailing space) for a suggestion, nothing without one.
pub fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion
        .map(|name| format!("did you mean '{name}'? "))
        .unwrap_or_default()
}

/// `did you mean 'x'? available columns: a, b, c`: the hint for an unknown column among
/// `available`.
pub fn column_hint<'a>(name: &str, available: impl IntoIterator<Item = &'a str>) -> String {
    let available: Vec<&str> = available.into_iter().collect();
    format!(
        "{}available columns: {}",
        did_you_mean(closest(name, available.iter().copied())),
        available.join(", ")
    )
}

/// Levenshtein distance, one row of the table at a time.
fn edit_distance(a: &[char], b: &str) -> usize {
    let mut row: Vec<usize> = (0..=a.len()).collect();
    for (j, b_char) in b.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = j + 1;
        for (i, a_char) in a.iter().enumerate() {
            let substitution = diagonal + usize::from(*a_char != b_char);
            diagonal = row[i + 1];
            row[i + 1] = substitution.min(row[i] + 1).min(diagonal + 1);
        }
    }
    row[a.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        let distance = |a: &str, b: &str| edit_distance(&a.chars().collect::<Vec<_>>(), b);
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("qty", ""), 3);
        assert_eq!(distance("", "qty"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ask_price1", "askprice1"), 1);
        assert_eq!(distance("qyt", "qty"), 2);
    }

    #[test]
    fn closest_suggests_near_names_only() {
        let names = ["ticktime", "ukey", "orderSide", "qty"];
        assert_eq!(closest("tick_time", names), Some("ticktime"));
        assert_eq!(closest("TICKTIME", names), Some("ticktime"));
        assert_eq!(closest("orderside", names), Some("orderSide"));
        assert_eq!(closest("qtty", names), Some("qty"));
        assert_eq!(closest("price", names), None);
        assert_eq!(closest("x", names), None);
    }

    #[test]
    fn hints_name_the_closest_and_every_column() {
        assert_eq!(
            column_hint("qyt", ["qty", "px"]),
            "did you mean 'qty'? available columns: qty, px"
        );
        assert_eq!(column_hint("zzz", ["qty"]), "available columns: qty");
    }
}
