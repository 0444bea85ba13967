/*
 * `ferry ca`: makes sure the interception CA exists (generating ferry's own on first use) and
 * tells the user where its certificate is and how to make clients trust it.
 */
#ifndef FY_CA_CMD_H
#define FY_CA_CMD_H

/* argv[0] is "ca"; then [--state-dir DIR] [--ca-cert FILE --ca-key FILE] [--help]. Prints the
 * certificate's path and trust instructions on stdout. Returns the exit status: 0, 1 when the CA
 * cannot be loaded or generated (one sentence on stderr), 2 for a bad command line. */
int fy_cmd_ca(int argc, char **argv);

#endif
