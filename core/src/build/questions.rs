//! The questions in a generator's reply: numbered lists in every style models reply in.

/// Where a list item starts: `1.`, `1)`, `(1)`, `1:`, `1、`, `Q1:`, `Question 1:`, `问题1：`,
/// optionally after markdown (`**`, `#`, `-`). Returns the item number and the text after the
/// marker.
fn item_start(line: &str) -> Option<(u32, &str)> {
    let mut s = line.trim_start().trim_start_matches(['#', '*', '-', '>', ' ']).trim_start();
    for prefix in ["Question", "question", "QUESTION", "问题", "Q", "q"] {
        if let Some(r) = s.strip_prefix(prefix) {
            let r = r.trim_start();
            if r.starts_with(|c: char| c.is_ascii_digit() || ('０'..='９').contains(&c)) {
                s = r;
                break;
            }
        }
    }
    let s = s.strip_prefix('(').unwrap_or(s);
    let digits: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || ('０'..='９').contains(c))
        .map(|c| if c.is_ascii_digit() { c } else { char::from(b'0' + (c as u32 - '０' as u32) as u8) })
        .collect();
    if digits.is_empty() || digits.len() > 2 {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    let after = &s[s.char_indices().nth(digits.chars().count()).map_or(s.len(), |(i, _)| i)..];
    let after = after.trim_start_matches("**");
    let mut chars = after.chars();
    let sep = chars.next()?;
    if !matches!(sep, '.' | ')' | ':' | '、' | '：' | '．' | '）') {
        return None;
    }
    let text = chars.as_str().trim_start_matches("**").trim_start_matches(')');
    // "3.5 million" is not an item: a separator must be followed by a space (or end the line).
    if sep == '.' && !(text.is_empty() || text.starts_with(char::is_whitespace)) {
        return None;
    }
    Some((n, text.trim()))
}

/// Strips markdown emphasis and quotes around a question.
fn clean(q: &str) -> String {
    let q = q.trim().trim_matches(|c| c == '*' || c == '"' || c == '“' || c == '”' || c == '`').trim();
    q.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The questions in a reply, as robustly as replies come: numbered lists in any common style,
/// items wrapped over several lines, a preamble ("Here are five questions:") and an epilogue
/// ignored, all items on one line, and — when there is no numbering at all — lines ending in a
/// question mark. Items under 8 characters and repeats are dropped.
pub fn parse_questions(reply: &str) -> Vec<String> {
    let mut items: Vec<(u32, String)> = Vec::new();
    let mut open = false;
    for line in reply.lines() {
        if let Some((n, text)) = item_start(line) {
            items.push((n, text.to_string()));
            open = true;
        } else if line.trim().is_empty() {
            // A blank line ends an item; an unnumbered paragraph after it is an epilogue.
            open = false;
        } else if open {
            let last = items.last_mut().expect("open item");
            last.1.push(' ');
            last.1.push_str(line.trim());
        }
    }
    // Everything on one line: "1. What …? 2. Why …? 3. How …?"
    if items.len() == 1 {
        let (_, text) = items.pop().expect("one item");
        items = split_inline(&text);
    }
    let mut qs: Vec<String> = if items.is_empty() {
        reply.lines().map(clean).filter(|l| l.ends_with('?') || l.ends_with('？')).collect()
    } else {
        items.into_iter().map(|(_, t)| clean(&t)).collect()
    };
    let mut seen = std::collections::HashSet::new();
    qs.retain(|q| q.chars().count() >= 8 && seen.insert(q.to_lowercase()));
    qs
}

/// Splits "What …? 2. Why …? 3. How …?" (the first marker already removed) at " 2. ", " 3. ", …
fn split_inline(text: &str) -> Vec<(u32, String)> {
    let mut out = vec![(1, String::new())];
    let mut rest = text;
    loop {
        let next = out.len() as u32 + 1;
        let marker = [format!(" {next}. "), format!(" {next}) ")]
            .into_iter()
            .filter_map(|m| rest.find(&m).map(|i| (i, m.len())))
            .min();
        match marker {
            Some((i, len)) => {
                out.last_mut().expect("non-empty").1.push_str(&rest[..i]);
                out.push((next, String::new()));
                rest = &rest[i + len..];
            }
            None => {
                out.last_mut().expect("non-empty").1.push_str(rest);
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_parse_from_the_styles_models_reply_in() {
        let five = [
            "What is the main claim?",
            "Why did the author move?",
            "How are A and B linked?",
            "When did the war end?",
            "Which method works best?",
        ];
        let styles = [
            "1. What is the main claim?\n2. Why did the author move?\n3. How are A and B linked?\n4. When did the war end?\n5. Which method works best?",
            "Here are five questions:\n\n1) What is the main claim?\n2) Why did the author move?\n3) How are A and B linked?\n4) When did the war end?\n5) Which method works best?\n\nI hope these help!",
            "**1.** **What is the main claim?**\n**2.** Why did the author move?\n**3.** How are A and B linked?\n**4.** When did the war end?\n**5.** Which method works best?",
            "Q1: What is the main claim?\nQ2: Why did the author move?\nQuestion 3: How are A and B linked?\n(4) When did the war end?\n5: Which method works best?",
            "1. What is the main claim? 2. Why did the author move? 3. How are A and B linked? 4. When did the war end? 5. Which method works best?",
            "- 1. What is the main\n  claim?\n- 2. Why did the author move?\n- 3. How are A and B linked?\n- 4. When did the war end?\n- 5. Which method works best?",
            "What is the main claim?\nWhy did the author move?\nHow are A and B linked?\nWhen did the war end?\nWhich method works best?",
        ];
        for s in styles {
            assert_eq!(parse_questions(s), five, "{s}");
        }
        let zh = "1、这篇文章的主要观点是什么？\n2、作者为什么搬家了呢？\n问题3：文中的两个实验有何不同？";
        assert_eq!(parse_questions(zh).len(), 3);
        // Numbers inside questions are not items; short and repeated items are dropped.
        assert_eq!(
            parse_questions(
                "1. Why did sales fall 3.5 percent in 2020?\n2. ok?\n3. why did sales fall 3.5 percent in 2020?"
            ),
            ["Why did sales fall 3.5 percent in 2020?"]
        );
        // Malformed: prose without questions, empty.
        assert!(parse_questions("I cannot help with that request.").is_empty());
        assert!(parse_questions("").is_empty());
    }

    proptest::proptest! {
        /// Any list of questions, numbered in any of the common styles and wrapped in a preamble
        /// and an epilogue, parses back to itself.
        #[test]
        fn numbered_lists_round_trip(
            qs in proptest::collection::vec("[A-Z][a-z]{3,12}( [a-z0-9]{2,9}){2,12}\\?", 1..8),
            style in 0usize..5,
        ) {
            let mut seen = std::collections::HashSet::new();
            let qs: Vec<String> = qs.into_iter().filter(|q| seen.insert(q.to_lowercase())).collect();
            let list: Vec<String> = qs.iter().enumerate().map(|(i, q)| match style {
                0 => format!("{}. {q}", i + 1),
                1 => format!("{}) {q}", i + 1),
                2 => format!("**{}.** {q}", i + 1),
                3 => format!("Q{}: {q}", i + 1),
                _ => format!("({}) {q}", i + 1),
            }).collect();
            let reply = format!("Sure! Here they are:\n\n{}\n\nLet me know if you need more.", list.join("\n"));
            proptest::prop_assert_eq!(parse_questions(&reply), qs);
        }
    }
}
