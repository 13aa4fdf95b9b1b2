/* placeholder until the sink lands */
int pgsink_placeholder(void);
int pgsink_placeholder(void)
{
    return 0;
}
