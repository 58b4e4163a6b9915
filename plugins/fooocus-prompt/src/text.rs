//! Fooocus's string rules, reproduced exactly (`extras/expansion.py:safe_str`,
//! `modules/util.py:parse_lora_references_from_prompt`/`cleanup_prompt`,
//! `modules/sdxl_styles.py:apply_arrays`).

/// `safe_str`: collapse double spaces (16 rounds) and strip `,. \r\n` from both ends.
pub fn safe_str(x: &str) -> String {
    let mut s = x.to_string();
    for _ in 0..16 {
        s = s.replace("  ", " ");
    }
    s.trim_matches([',', '.', ' ', '\r', '\n']).to_string()
}

/// `cleanup_prompt`: runs of spaces and commas collapsed, comma-separated tokens stripped, empty
/// ones dropped, re-joined with ", ".
pub fn cleanup_prompt(prompt: &str) -> String {
    let mut collapsed = String::with_capacity(prompt.len());
    for c in prompt.chars() {
        let last = collapsed.chars().last();
        if (c == ' ' && last == Some(' ')) || (c == ',' && last == Some(',')) {
            continue;
        }
        collapsed.push(c);
    }
    collapsed.split(',').map(str::trim).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(", ")
}

/// One `<lora:NAME:WEIGHT>` match at the start of `s`: (length, name, weight).
fn lora_tag_at(s: &str) -> Option<(usize, &str, f32)> {
    let rest = s.strip_prefix("<lora:")?;
    let name_len = rest.find(':')?;
    if name_len == 0 {
        return None;
    }
    let (name, after) = (&rest[..name_len], &rest[name_len + 1..]);
    // [+-]?(\d+(\.\d*)?|\.\d+)
    let b = after.as_bytes();
    let mut n = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_digits = b[n..].iter().take_while(|c| c.is_ascii_digit()).count();
    n += int_digits;
    if b.get(n) == Some(&b'.') {
        let frac = b[n + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if int_digits == 0 && frac == 0 {
            return None;
        }
        n += 1 + frac;
    } else if int_digits == 0 {
        return None;
    }
    if b.get(n) != Some(&b'>') {
        return None;
    }
    let weight = after[..n].parse().ok()?;
    Some(("<lora:".len() + name_len + 1 + n + 1, name, weight))
}

/// `parse_lora_references_from_prompt` on the main prompt: the tags found per comma-separated
/// token as (file stem, weight), and the prompt without them, cleaned up. (Which stems exist is
/// the host's business: it resolves them in `loras/` and skips unknown ones, as Fooocus does.)
pub fn take_lora_tags(prompt: &str) -> (String, Vec<(String, f32)>) {
    let mut found = Vec::new();
    let mut without = String::new();
    for token in prompt.split(',') {
        let mut token = token.to_string();
        let mut matches = Vec::new();
        let mut i = 0;
        while i < token.len() {
            match lora_tag_at(&token[i..]) {
                Some((len, name, weight)) => {
                    matches.push((token[i..i + len].to_string(), name.to_string(), weight));
                    i += len;
                }
                None => i += token[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        for (tag, name, weight) in matches {
            if !found.iter().any(|(n, w): &(String, f32)| *n == name && *w == weight) {
                found.push((name, weight));
            }
            token = token.replace(&tag, "");
        }
        without.push_str(&token);
        without.push_str(", ");
    }
    (cleanup_prompt(&without), found)
}

/// `apply_arrays`: every `[[a,b,c]]` group picks one item by the image index, mixed radix with
/// the first group as the least significant digit. Items are not stripped.
pub fn apply_arrays(text: &str, index: usize) -> String {
    let groups = array_groups(text);
    if groups.is_empty() {
        return text.to_string();
    }
    let sizes: Vec<usize> = groups.iter().map(|g| g.split(',').count()).collect();
    let mult: usize = sizes.iter().product();
    let mut rest = index % mult;
    let mut out = text.to_string();
    for (group, size) in groups.iter().zip(&sizes) {
        let word = group.split(',').nth(rest % size).unwrap_or("");
        rest /= size;
        out = out.replacen(&format!("[[{group}]]"), word, 1);
    }
    out
}

/// `re.findall(r'\[\[(.*?)\]\]', text)`: shortest groups, left to right, not across lines.
fn array_groups(text: &str) -> Vec<String> {
    let mut groups = Vec::new();
    let mut i = 0;
    while let Some(start) = text[i..].find("[[").map(|s| s + i) {
        let body_start = start + 2;
        match text[body_start..].find("]]") {
            Some(len) if !text[body_start..body_start + len].contains('\n') => {
                groups.push(text[body_start..body_start + len].to_string());
                i = body_start + len + 2;
            }
            _ => i = start + 1,
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values worked out from the Python functions by hand.
    #[test]
    fn strings_follow_fooocus() {
        assert_eq!(safe_str("  a  cat,. "), "a cat");
        assert_eq!(cleanup_prompt("a ,, b ,  , c"), "a, b, c");
        let (p, loras) = take_lora_tags("a cat, <lora:detail:0.8>, <lora:x:+1.>b, <lora:bad>");
        assert_eq!(p, "a cat, b, <lora:bad>");
        assert_eq!(loras, [("detail".to_string(), 0.8), ("x".to_string(), 1.0)]);
        // [[red, blue]] x [[cat,dog]]: index 3 → (3 % 2 = 1: " blue"), (3 / 2 = 1: "dog")
        assert_eq!(apply_arrays("a [[red, blue]] [[cat,dog]]", 3), "a  blue dog");
        assert_eq!(apply_arrays("[[a]] [[b\nc]]", 0), "a [[b\nc]]");
    }
}
