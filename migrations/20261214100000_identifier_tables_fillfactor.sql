-- Room on each page of the two identifier tables for the rows' next versions, so that
-- a re-sighted identifier is updated in place (a HOT update: no new index entries).
--
-- Every event's identifiers are upserted into profile_identifier (first/last seen, the
-- count) and identity_identifier (the latest event, the partners). Neither update
-- changes an indexed column (the owner only changes on a merge; the suspect flag,
-- the partial indexes' predicate, rarely), so both could be HOT, but a HOT update needs
-- free space on the row's own page. Rows are inserted in arrival order, filling each
-- page completely, and a person's identifiers are seen again seconds later, while
-- their page is still full: the pipeline benchmark measured 5 % of these updates HOT
-- (13 of 249 and 10 of 249 per 1,000 events); every other update wrote a new entry
-- in each index of its table (docs/performance.md, "Room for the identifiers' next
-- versions").
--
-- Pages written from now on are filled to 80 %; existing pages are not rewritten (no
-- lock beyond this statement's, no data touched). `ALTER TABLE … RESET (fillfactor)`
-- undoes it.
ALTER TABLE profile_identifier SET (fillfactor = 70);
ALTER TABLE identity_identifier SET (fillfactor = 70);
