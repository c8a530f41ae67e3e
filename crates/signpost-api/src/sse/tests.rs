use super::*;

fn ev(event: &str, data: &str, id: Option<&str>) -> Event {
    Event {
        event: event.into(),
        data: data.into(),
        id: id.map(Into::into),
    }
}

#[test]
fn a_frame_is_one_sse_event() {
    let f = frame("add", 42, br#"{"index":42}"#);
    assert_eq!(f, "event: add\nid: 42\ndata: {\"index\":42}\n\n");
}

#[test]
fn what_the_encoder_writes_the_parser_reads_back() {
    let mut stream = Vec::new();
    stream.extend_from_slice(&frame("reset", 7, br#"{"index":7,"instances":[]}"#));
    stream.extend_from_slice(KEEP_ALIVE);
    stream.extend_from_slice(&frame("add", 8, "{\"x\":\"é\"}".as_bytes()));
    let expected = vec![
        ev("reset", r#"{"index":7,"instances":[]}"#, Some("7")),
        ev("add", "{\"x\":\"é\"}", Some("8")),
    ];
    // Whole, and split at every point (inside the multi-byte character too).
    assert_eq!(Parser::new().push(&stream).unwrap(), expected);
    for cut in 0..stream.len() {
        let mut p = Parser::new();
        let mut got = p.push(&stream[..cut]).unwrap();
        got.extend(p.push(&stream[cut..]).unwrap());
        assert_eq!(got, expected, "cut at {cut}");
    }
}

#[test]
fn parses_events_split_anywhere() {
    let text =
        b": keep-alive\n\nevent: reset\nid: 3\ndata: {\"a\":1}\n\nevent:add\ndata:x\ndata: y\n\n";
    let whole = Parser::new().push(text).unwrap();
    assert_eq!(
        whole,
        vec![
            ev("reset", "{\"a\":1}", Some("3")),
            ev("add", "x\ny", Some("3"))
        ]
    );
    for cut in 0..text.len() {
        let mut p = Parser::new();
        let mut got = p.push(&text[..cut]).unwrap();
        got.extend(p.push(&text[cut..]).unwrap());
        assert_eq!(got, whole, "cut at {cut}");
    }
}

#[test]
fn parses_events_comments_and_crlf() {
    let mut p = Parser::new();
    let input = ": keep-alive\n\nevent: reset\r\ndata: {\"index\":1}\r\n\r\n\
                 event:add\ndata:{\"a\":1}\nid: 7\nretry: 100\n\n";
    let events = p.push(input.as_bytes()).unwrap();
    assert_eq!(
        events,
        vec![
            ev("reset", "{\"index\":1}", None),
            ev("add", "{\"a\":1}", Some("7"))
        ]
    );
}

#[test]
fn handles_crlf_and_cr_line_endings() {
    let mut p = Parser::new();
    let got = p
        .push(b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\r")
        .unwrap();
    assert_eq!(got, vec![ev("a", "1", None), ev("b", "2", None)]);
    // A CR at the end of one chunk and the LF at the start of the next are one newline.
    let mut p = Parser::new();
    let mut got = p.push(b"data: 1\r").unwrap();
    got.extend(p.push(b"\n\r").unwrap());
    got.extend(p.push(b"\n").unwrap());
    assert_eq!(got, vec![ev("message", "1", None)]);
}

#[test]
fn joins_multiline_data_and_defaults_the_event_name() {
    let mut p = Parser::new();
    let events = p
        .push(b"data: one\ndata:two\ndata\ndata:  three\n\nevent:\ndata: e\n\n")
        .unwrap();
    assert_eq!(
        events,
        vec![
            ev("message", "one\ntwo\n\n three", None),
            ev("message", "e", None)
        ]
    );
}

#[test]
fn handles_arbitrary_chunk_sizes_and_a_byte_order_mark() {
    let input =
        "\u{feff}event: update\r\ndata: {\"x\":\"é\"}\r\n\r\n: ping\n\nevent: remove\ndata: 2\n\n";
    let expected = vec![ev("update", "{\"x\":\"é\"}", None), ev("remove", "2", None)];
    for size in 1..=7 {
        let mut p = Parser::new();
        let mut events = Vec::new();
        for chunk in input.as_bytes().chunks(size) {
            events.extend(p.push(chunk).unwrap());
        }
        assert_eq!(events, expected, "chunk size {size}");
    }
}

#[test]
fn drops_events_without_data_and_unterminated_events() {
    let mut p = Parser::new();
    // The event name of a data-less event must not leak into the next one.
    let events = p
        .push(b"event: add\n\ndata: x\n\nevent: reset\ndata: y\n")
        .unwrap();
    assert_eq!(events, vec![ev("message", "x", None)]);
    assert_eq!(p.push(b"").unwrap(), vec![]);
    // The pending event completes once its blank line arrives.
    assert_eq!(p.push(b"\n").unwrap(), vec![ev("reset", "y", None)]);
    let got = Parser::new()
        .push(b":hi\nretry: 10\nfoo: bar\nevent: x\n\ndata\n\n")
        .unwrap();
    assert_eq!(got, vec![ev("message", "", None)]);
}

#[test]
fn refuses_oversized_lines_and_events() {
    let mut p = Parser::new();
    let big = vec![b'a'; MAX_EVENT_BYTES];
    assert!(p.push(&big).is_ok());
    assert_eq!(p.push(b"a"), Err(ParseError::TooLarge));

    // Many data lines that are each small but add up.
    let mut p = Parser::new();
    let line = [b"data: ".as_slice(), &vec![b'x'; 1 << 20], b"\n"].concat();
    let mut result = Ok(Vec::new());
    for _ in 0..=(MAX_EVENT_BYTES >> 20) {
        result = p.push(&line);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(ParseError::TooLarge));
}

#[test]
fn invalid_utf8_does_not_panic() {
    let mut p = Parser::new();
    let got = p.push(b"data: \xff\xfe\n\n").unwrap();
    assert_eq!(got.len(), 1);
}
