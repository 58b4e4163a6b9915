//! The tagger's label list and Fooocus's rules for picking tags (`extras/wd14tagger.py`).

use anyhow::{bail, Result};

/// Rows of the tagger's CSV (`tag_id,name,category,count`): the names in output order, and where
/// the general (category 0) and character (category 4) tags begin.
#[derive(Debug, Clone)]
pub struct TagList {
    names: Vec<String>,
    general: Option<usize>,
    character: Option<usize>,
}

/// At most this many rows (the real list has 9083).
const MAX_TAGS: usize = 100_000;

impl TagList {
    /// Reads the CSV as Python's `csv.reader` does for this file (no quoted commas in tag names),
    /// skipping the header row.
    pub fn parse(csv: &str) -> Result<Self> {
        let mut names = Vec::new();
        let (mut general, mut character) = (None, None);
        for (i, line) in csv.lines().skip(1).filter(|l| !l.is_empty()).enumerate() {
            if i >= MAX_TAGS {
                bail!("the tag list has more than {MAX_TAGS} rows");
            }
            let fields: Vec<&str> = line.split(',').collect();
            let [_, name, category, ..] = fields[..] else { bail!("tag list row {} has fewer than 3 fields", i + 2) };
            // Fooocus: the first category-0 row starts the general tags, the first category-4
            // row after it the character tags.
            if general.is_none() && category == "0" {
                general = Some(i);
            } else if character.is_none() && category == "4" {
                character = Some(i);
            }
            names.push(name.to_string());
        }
        if names.is_empty() {
            bail!("the tag list has no rows");
        }
        Ok(TagList { names, general, character })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// `default_interrogator`'s answer for these probabilities (one per row): character tags above
    /// `character_threshold`, then general tags above `threshold`, minus `exclude` (comma-separated,
    /// case-insensitive), brackets escaped, underscores as spaces, joined by ", ". A list without
    /// general or character rows slices as Python's `result[None:…]` does (from the first row).
    pub fn describe(&self, probabilities: &[f32], threshold: f64, character_threshold: f64, exclude: &str) -> String {
        let len = self.names.len();
        // Python compares the float32 probabilities with float thresholds in double precision.
        let scored = |range: std::ops::Range<usize>, min: f64| {
            range.filter(move |&i| probabilities.get(i).is_some_and(|&p| p as f64 > min)).map(|i| self.names[i].as_str())
        };
        let general = scored(self.general.unwrap_or(0)..self.character.unwrap_or(len), threshold);
        let character = scored(self.character.unwrap_or(0)..len, character_threshold);
        let excluded: Vec<String> = exclude.to_lowercase().split(',').map(|s| s.trim().to_string()).collect();
        character
            .chain(general)
            .filter(|name| !excluded.iter().any(|e| e == name))
            .map(|name| name.replace('(', "\\(").replace(')', "\\)"))
            .collect::<Vec<_>>()
            .join(", ")
            .replace('_', " ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str =
        "tag_id,name,category,count\n1,general,9,0\n2,smile,0,5\n3,long_hair,0,4\n4,hat_(cap),0,3\n5,alice_(x),4,2\n6,bob,4,1\n";

    #[test]
    fn picks_characters_first_then_general_tags_above_their_thresholds() {
        let tags = TagList::parse(CSV).unwrap();
        assert_eq!(tags.len(), 6);
        let p = [0.99, 0.9, 0.2, 0.5, 0.86, 0.84];
        assert_eq!(tags.describe(&p, 0.35, 0.85, ""), "alice \\(x\\), smile, hat \\(cap\\)");
        // Excluded by the names as written in the list (before the underscore becomes a space).
        assert_eq!(tags.describe(&p, 0.35, 0.85, " SMILE , hat_(cap)"), "alice \\(x\\)");
        // A rating tag (category 9) is never reported, however sure.
        assert!(!tags.describe(&p, 0.0, 0.0, "").contains("general"));
    }

    #[test]
    fn malformed_lists_are_refused() {
        assert!(TagList::parse("tag_id,name,category,count\n").is_err());
        assert!(TagList::parse("tag_id,name,category,count\n1,general\n").is_err());
    }

    #[test]
    fn thresholds_compare_in_double_precision_as_python_does() {
        let tags = TagList::parse(CSV).unwrap();
        // 0.35f32 is 0.3499999940…: below Python's 0.35, so not reported.
        let p = [0.0, 0.35, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(tags.describe(&p, 0.35, 0.85, ""), "");
    }
}
