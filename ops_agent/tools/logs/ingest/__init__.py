"""Collection: parsing lines of any format, following files, the redacting collector, Vercel's logs."""
