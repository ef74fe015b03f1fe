// Files the specs upload.

// Seven customers; lines 4 and 7 (the header is line 1) have no usable identifier.
export const CUSTOMERS_CSV = [
  "Name,Mobile,E-mail,City",
  "Nisha Verma,+91 98111 22233,nisha.verma@example.in,Pune",
  "Sameer Khan,98222 33344,,Mumbai",
  "No Contact,,not-an-email,Delhi",
  "Lata Menon,,lata.menon@example.in,Kochi",
  "\"Rao, Prakash\",+91 98333 44455,prakash.rao@example.in,Chennai",
  "Typo Number,12,,Jaipur",
  "Anil Gupta,98444 55566,anil.gupta@example.in,Lucknow",
].join("\n") + "\n";
