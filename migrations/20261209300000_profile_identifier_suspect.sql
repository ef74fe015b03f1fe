-- The identifier-index rows flagged suspect or shared, indexed on their own (issue 19).
-- Every resolver write clears the flag of the identifiers it touched that are no longer
-- suspect or shared; looking each one up in the primary key cost one more B-tree level
-- as the index grew (1,201 -> 3,340 buffers a call between 1,000 and 200,000 existing
-- profiles, no row changed). Only flagged rows are in this index, so the lookup stays
-- as cheap as the number of shared identifiers allows, whatever the number of profiles.
CREATE INDEX profile_identifier_suspect ON profile_identifier (kind, value) WHERE suspect;
