/* placeholder while the coordinator is being assembled */
int main(void) { return 2; }
